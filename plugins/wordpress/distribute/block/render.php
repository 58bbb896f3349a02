<?php
/**
 * Server-side rendering of the distribute block.
 *
 * @package Distribute
 *
 * @var array $attributes The block's attributes.
 */

defined( 'ABSPATH' ) || exit;

echo \DistributeCompute\render_block( $attributes ); // render_block() escapes every value it prints.

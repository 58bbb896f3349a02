<?php
/**
 * Dependencies and version of index.js (what a build step would generate; this block has none).
 *
 * @package Distribute
 */

return array(
	'dependencies' => array( 'wp-block-editor', 'wp-blocks', 'wp-components', 'wp-element', 'wp-i18n', 'wp-server-side-render' ),
	'version'      => '0.1.0',
);

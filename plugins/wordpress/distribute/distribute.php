<?php
/**
 * Plugin Name:       distribute
 * Description:       Lets your visitors lend their spare computing power to a distribute volunteer-computing campaign: a shortcode and a block that embed distribute's consent card.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      7.4
 * Author:            The distribute authors
 * License:           MIT
 * License URI:       https://opensource.org/licenses/MIT
 * Text Domain:       distribute
 *
 * @package Distribute
 */

namespace DistributeCompute;

defined( 'ABSPATH' ) || exit;

const OPTION      = 'distribute_settings';
const PLUGIN_FILE = __FILE__;

require_once __DIR__ . '/includes/snippet.php';
require_once __DIR__ . '/includes/render.php';
require_once __DIR__ . '/includes/settings.php';

add_action( 'init', __NAMESPACE__ . '\\init' );

/**
 * Registers the shortcode and the block (whose block.json names the text domain, so that
 * WordPress also loads the editor script's translations).
 *
 * @return void
 */
function init() {
	add_shortcode( 'distribute', __NAMESPACE__ . '\\shortcode' );
	register_block_type( __DIR__ . '/block' );
}

if ( is_admin() ) {
	add_action( 'admin_init', __NAMESPACE__ . '\\register_settings' );
	add_action( 'admin_menu', __NAMESPACE__ . '\\add_settings_page' );
	add_filter( 'plugin_action_links_' . plugin_basename( PLUGIN_FILE ), __NAMESPACE__ . '\\settings_link' );
}

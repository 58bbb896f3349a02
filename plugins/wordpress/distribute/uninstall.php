<?php
/**
 * Removes the plugin's option when the plugin is deleted (on every site of a network).
 *
 * @package Distribute
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

delete_option( 'distribute_settings' );

if ( is_multisite() ) {
	foreach ( get_sites(
		array(
			'fields' => 'ids',
			'number' => 0,
		)
	) as $distribute_site_id ) {
		switch_to_blog( $distribute_site_id );
		delete_option( 'distribute_settings' );
		restore_current_blog();
	}
}

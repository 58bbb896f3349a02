<?php
// Installs WordPress into the database of wp-config.php: php install.php WP_ROOT HOST PASSWORD
[ , $root, $host, $password ] = $argv;
$_SERVER['HTTP_HOST']   = $host;
$_SERVER['SERVER_NAME'] = 'localhost';
$_SERVER['REQUEST_URI'] = '/';
define( 'WP_INSTALLING', true );
require $root . '/wp-load.php';
require ABSPATH . 'wp-admin/includes/upgrade.php';
$result = wp_install( 'A site with distribute', 'admin', 'admin@example.org', false, '', $password );
echo wp_json_encode( array( 'user_id' => $result['user_id'] ) );

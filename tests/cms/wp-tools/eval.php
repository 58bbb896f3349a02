<?php
// Runs the PHP code on stdin inside WordPress as user USER_ID and prints what it returns as JSON,
// after a marker line: php eval.php WP_ROOT HOST USER_ID (arguments for the code in $_ENV['WP_TEST_ARGS']).
[ , $root, $host, $user_id ] = $argv;
$_SERVER['HTTP_HOST']      = $host;
$_SERVER['SERVER_NAME']    = 'localhost';
$_SERVER['REQUEST_URI']    = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
require $root . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
wp_set_current_user( (int) $user_id );
$args   = json_decode( (string) getenv( 'WP_TEST_ARGS' ), true );
$result = eval( stream_get_contents( STDIN ) );
echo "\n--RESULT--\n", wp_json_encode( $result );

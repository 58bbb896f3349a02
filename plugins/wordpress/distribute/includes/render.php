<?php
/**
 * What a post shows: the shortcode and the block render the same markup, with the site's
 * defaults (Settings → distribute) for whatever they leave out.
 *
 * @package Distribute
 */

namespace DistributeCompute;

defined( 'ABSPATH' ) || exit;

/**
 * The option's defaults.
 *
 * @return array
 */
function default_settings() {
	$spec = spec();
	return array(
		'server_url'   => '',
		'campaign'     => '',
		'consent_text' => '',
		'throttle'     => isset( $spec['throttle']['default'] ) ? $spec['throttle']['default'] : 'low',
	);
}

/**
 * The site's settings, every key present.
 *
 * @return array
 */
function settings() {
	$saved = get_option( OPTION, array() );
	$saved = is_array( $saved ) ? $saved : array();
	return array_merge( default_settings(), array_intersect_key( $saved, default_settings() ) );
}

/**
 * The markup of one embed: an optional consent line and the iframe, in a wrapper.
 *
 * Anything invalid renders as a notice for people who can edit posts and as nothing for visitors.
 *
 * @param array  $args    The campaign, server, height, throttle and site key (strings; empty: the site's default).
 * @param string $wrapper The wrapper's attributes, already escaped.
 * @return string
 */
function render_embed( array $args, $wrapper ) {
	$settings   = settings();
	$pick       = function ( $key, $fallback ) use ( $args ) {
		$value = isset( $args[ $key ] ) && is_scalar( $args[ $key ] ) ? trim( (string) $args[ $key ] ) : '';
		return '' !== $value ? $value : $fallback;
	};
	$server     = $pick( 'server', $settings['server_url'] );
	if ( ! may_choose_server( $server, $settings['server_url'] ) ) {
		return error_notice(
			new \WP_Error(
				'distribute_server',
				__( 'This post\'s author may embed only the server set under Settings → distribute: choosing another server needs the unfiltered_html capability.', 'distribute' )
			)
		);
	}
	$attributes = iframe_attributes(
		$server,
		$pick( 'campaign', $settings['campaign'] ),
		$pick( 'height', '' ),
		$pick( 'throttle', $settings['throttle'] ),
		$pick( 'site', '' )
	);
	if ( is_wp_error( $attributes ) ) {
		return error_notice( $attributes );
	}
	$consent = '' !== $settings['consent_text']
		? '<p class="distribute-consent">' . esc_html( $settings['consent_text'] ) . '</p>'
		: '';
	return '<div ' . $wrapper . '>' . $consent . iframe_html( $attributes ) . '</div>';
}

/**
 * Whether the post being rendered may point its iframe at `$server`.
 *
 * The iframe runs whatever its server sends in the site's visitors' browsers, so choosing the server
 * is as strong as writing raw HTML. Authors who may not do that (contributors, authors, and anyone
 * without `unfiltered_html`) get the site's configured server only. Markup outside a post (a theme
 * template, a widget) comes from administrators and may choose.
 *
 * @param string $server     The server the embed asks for.
 * @param string $configured The server under Settings → distribute.
 * @return bool
 */
function may_choose_server( $server, $configured ) {
	$post = get_post();
	if ( ! $post || ! $post->post_author ) {
		return true;
	}
	if ( user_can( (int) $post->post_author, 'unfiltered_html' ) ) {
		return true;
	}
	return '' !== normalize_server( $server ) && normalize_server( $server ) === normalize_server( $configured );
}

/**
 * A visible, escaped explanation for editors; nothing for visitors.
 *
 * @param \WP_Error $error What is wrong.
 * @return string
 */
function error_notice( $error ) {
	if ( ! current_user_can( 'edit_posts' ) ) {
		return '';
	}
	return '<p class="distribute-error" role="alert"><strong>distribute:</strong> '
		. esc_html( $error->get_error_message() )
		. ' <em>' . esc_html__( '(Only people who can edit posts see this message.)', 'distribute' ) . '</em></p>';
}

/**
 * The [distribute] shortcode: [distribute campaign="12" server="https://…" height="300" throttle="medium" site="KEY"].
 *
 * @param array|string $atts The shortcode's attributes.
 * @return string
 */
function shortcode( $atts ) {
	$atts = shortcode_atts(
		array(
			'campaign' => '',
			'server'   => '',
			'height'   => '',
			'throttle' => '',
			'site'     => '',
		),
		$atts,
		'distribute'
	);
	return render_embed( $atts, 'class="distribute-embed"' );
}

/**
 * The block's server-side rendering (block/render.php calls it).
 *
 * @param array $attributes The block's attributes.
 * @return string
 */
function render_block( array $attributes ) {
	$args = array(
		'campaign' => isset( $attributes['campaign'] ) ? $attributes['campaign'] : '',
		'server'   => isset( $attributes['server'] ) ? $attributes['server'] : '',
		'height'   => isset( $attributes['height'] ) ? $attributes['height'] : '',
		'throttle' => isset( $attributes['throttle'] ) ? $attributes['throttle'] : '',
		'site'     => isset( $attributes['site'] ) ? $attributes['site'] : '',
	);
	return render_embed( $args, get_block_wrapper_attributes( array( 'class' => 'distribute-embed' ) ) );
}

<?php
/**
 * The iframe itself, built from snippet.json: the one definition of distribute's embed snippet,
 * shared with distribute's own embed_snippet and the Hugo shortcode.
 *
 * @package Distribute
 */

namespace DistributeCompute;

use WP_Error;

defined( 'ABSPATH' ) || exit;

/**
 * The snippet definition (snippet.json), read once per request.
 *
 * @return array
 */
function spec() {
	static $spec = null;
	if ( null === $spec ) {
		$spec = wp_json_file_decode( dirname( __DIR__ ) . '/snippet.json', array( 'associative' => true ) );
		if ( ! is_array( $spec ) || empty( $spec['attributes'] ) ) {
			$spec = array();
		}
	}
	return $spec;
}

/**
 * Whether a value matches one of the definition's patterns (campaign, height, server), whole.
 *
 * @param string $pattern_name Key in the definition's "patterns".
 * @param string $value        The value to check.
 * @return bool
 */
function matches( $pattern_name, $value ) {
	$spec = spec();
	if ( ! is_string( $value ) || empty( $spec['patterns'][ $pattern_name ] ) ) {
		return false;
	}
	$regex = '/' . str_replace( '/', '\\/', $spec['patterns'][ $pattern_name ] ) . '/D';
	return 1 === preg_match( $regex, $value );
}

/**
 * The server URL as the snippet uses it: without surrounding blanks and trailing slashes.
 *
 * @param string $server A server URL.
 * @return string
 */
function normalize_server( $server ) {
	return rtrim( trim( (string) $server ), '/' );
}

/**
 * Validates the four settings of one embed and returns the iframe's attributes, in order.
 *
 * Values are returned unescaped: iframe_html() escapes them.
 *
 * @param string     $server   The distribute server's URL, http(s).
 * @param string     $campaign A campaign number, or "any".
 * @param string|int $height   Height in pixels; empty for the default.
 * @param string     $throttle One of the throttle levels; empty for the default.
 * @param string     $site     A registered site's key (optional): its policy applies on its own pages.
 * @return array|WP_Error Attribute name => value, or what is wrong.
 */
function iframe_attributes( $server, $campaign, $height, $throttle, $site = '' ) {
	$spec = spec();
	if ( empty( $spec ) ) {
		return new WP_Error( 'distribute_definition', __( 'The plugin is damaged: its snippet.json is missing or unreadable.', 'distribute' ) );
	}
	$server   = normalize_server( $server );
	$campaign = trim( (string) $campaign );
	$height   = trim( (string) $height );
	$throttle = trim( (string) $throttle );
	$site     = trim( (string) $site );
	if ( '' === $height ) {
		$height = (string) $spec['height']['default'];
	}
	if ( '' === $throttle ) {
		$throttle = $spec['throttle']['default'];
	}

	if ( '' === $server ) {
		return new WP_Error( 'distribute_server', __( 'No distribute server is set: add server="https://…" or set one under Settings → distribute.', 'distribute' ) );
	}
	if ( ! matches( 'server', $server ) ) {
		/* translators: %s: the server URL as written. */
		return new WP_Error( 'distribute_server', sprintf( __( 'The server must be an http:// or https:// address such as https://compute.example.org, not "%s".', 'distribute' ), $server ) );
	}
	if ( '' === $campaign ) {
		return new WP_Error( 'distribute_campaign', __( 'No campaign is set: add campaign="12" (a campaign number, or "any") or set a default under Settings → distribute.', 'distribute' ) );
	}
	if ( ! matches( 'campaign', $campaign ) ) {
		/* translators: %s: the campaign as written. */
		return new WP_Error( 'distribute_campaign', sprintf( __( 'The campaign must be a campaign number or "any", not "%s".', 'distribute' ), $campaign ) );
	}
	$minimum = (int) $spec['height']['min'];
	$maximum = (int) $spec['height']['max'];
	if ( ! matches( 'height', $height ) || (int) $height < $minimum || (int) $height > $maximum ) {
		return new WP_Error(
			'distribute_height',
			/* translators: 1: smallest height, 2: largest height, 3: the height as written. */
			sprintf( __( 'The height must be a number of pixels from %1$d to %2$d, not "%3$s".', 'distribute' ), $minimum, $maximum, $height )
		);
	}
	if ( ! in_array( $throttle, $spec['throttle']['levels'], true ) ) {
		/* translators: 1: the allowed levels, 2: the throttle as written. */
		return new WP_Error( 'distribute_throttle', sprintf( __( 'The throttle must be one of %1$s, not "%2$s".', 'distribute' ), implode( ', ', $spec['throttle']['levels'] ), $throttle ) );
	}
	if ( '' !== $site && ! matches( 'site', $site ) ) {
		/* translators: %s: the site key as written. */
		return new WP_Error( 'distribute_site', sprintf( __( 'The site key must be the key the distribute console shows for your site, not "%s".', 'distribute' ), $site ) );
	}

	if ( 'any' !== $campaign ) {
		$campaign = ltrim( $campaign, '0' );
		$campaign = '' === $campaign ? '0' : $campaign;
	}
	$src = strtr(
		$spec['src'],
		array(
			'{server}'   => $server,
			'{campaign}' => $campaign,
		)
	);
	if ( $throttle !== $spec['throttle']['default'] ) {
		$src .= strtr( $spec['src_throttle'], array( '{throttle}' => $throttle ) );
	}
	if ( '' !== $site ) {
		$src .= ( false === strpos( $src, '?' ) ? '?' : '&' ) . strtr( $spec['src_site'], array( '{site}' => $site ) );
	}
	$attributes = array();
	foreach ( $spec['attributes'] as $attribute ) {
		$attributes[ $attribute['name'] ] = strtr(
			$attribute['value'],
			array(
				'{src}'    => $src,
				'{height}' => (string) (int) $height,
			)
		);
	}
	return $attributes;
}

/**
 * The iframe element, every attribute escaped.
 *
 * @param array $attributes Attribute name => unescaped value, from iframe_attributes().
 * @return string
 */
function iframe_html( array $attributes ) {
	$html = '<iframe';
	foreach ( $attributes as $name => $value ) {
		if ( 1 !== preg_match( '/^[a-z]+$/D', $name ) ) {
			continue;
		}
		// esc_url would write a query's "&" as "&#038;"; the raw URL escaped as an attribute is "&amp;", byte
		// for byte what distribute's own snippet has (the scheme is still restricted to http and https).
		$escaped = 'src' === $name ? esc_attr( esc_url_raw( $value, array( 'http', 'https' ) ) ) : esc_attr( $value );
		$html   .= ' ' . $name . '="' . $escaped . '"';
	}
	return $html . '></iframe>';
}

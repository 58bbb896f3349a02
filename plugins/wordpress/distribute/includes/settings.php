<?php
/**
 * Settings → distribute: the site's defaults, through the Settings API (options.php checks the
 * nonce and the manage_options capability; every value is validated here and escaped on output).
 *
 * @package Distribute
 */

namespace DistributeCompute;

defined( 'ABSPATH' ) || exit;

const SETTINGS_PAGE = 'distribute';

/**
 * Registers the option, its section and its fields.
 *
 * @return void
 */
function register_settings() {
	register_setting(
		SETTINGS_PAGE,
		OPTION,
		array(
			'type'              => 'array',
			'description'       => __( 'Defaults of the distribute shortcode and block.', 'distribute' ),
			'sanitize_callback' => __NAMESPACE__ . '\\sanitize_settings',
			'default'           => default_settings(),
			'show_in_rest'      => false,
		)
	);
	add_settings_section( 'distribute_defaults', __( 'Defaults for every embed', 'distribute' ), __NAMESPACE__ . '\\section_intro', SETTINGS_PAGE );
	$fields = array(
		'server_url'   => __( 'Server URL', 'distribute' ),
		'campaign'     => __( 'Default campaign', 'distribute' ),
		'throttle'     => __( 'Default CPU setting', 'distribute' ),
		'consent_text' => __( 'Consent text', 'distribute' ),
	);
	foreach ( $fields as $key => $label ) {
		add_settings_field(
			'distribute_' . $key,
			$label,
			__NAMESPACE__ . '\\field_' . $key,
			SETTINGS_PAGE,
			'distribute_defaults',
			array( 'label_for' => 'distribute_' . $key )
		);
	}
}

/**
 * Validates what the settings form sent; keeps the saved value of any field that is invalid.
 *
 * @param mixed $input The submitted option value.
 * @return array
 */
function sanitize_settings( $input ) {
	$clean = settings();
	if ( ! is_array( $input ) ) {
		return $clean;
	}
	$spec = spec();

	if ( isset( $input['server_url'] ) ) {
		$server = normalize_server( sanitize_text_field( $input['server_url'] ) );
		if ( '' === $server || matches( 'server', $server ) ) {
			$clean['server_url'] = $server;
		} else {
			add_settings_error( OPTION, 'server_url', __( 'The server URL must be an http:// or https:// address such as https://compute.example.org; it was not changed.', 'distribute' ) );
		}
	}
	if ( isset( $input['campaign'] ) ) {
		$campaign = trim( sanitize_text_field( $input['campaign'] ) );
		if ( '' === $campaign || matches( 'campaign', $campaign ) ) {
			$clean['campaign'] = $campaign;
		} else {
			add_settings_error( OPTION, 'campaign', __( 'The default campaign must be a campaign number or "any"; it was not changed.', 'distribute' ) );
		}
	}
	if ( isset( $input['throttle'] ) ) {
		$throttle = sanitize_key( $input['throttle'] );
		if ( in_array( $throttle, $spec['throttle']['levels'], true ) ) {
			$clean['throttle'] = $throttle;
		} else {
			add_settings_error( OPTION, 'throttle', __( 'Unknown CPU setting; it was not changed.', 'distribute' ) );
		}
	}
	if ( isset( $input['consent_text'] ) ) {
		$clean['consent_text'] = mb_substr( sanitize_textarea_field( $input['consent_text'] ), 0, 500 );
	}
	return $clean;
}

/**
 * Adds Settings → distribute.
 *
 * @return void
 */
function add_settings_page() {
	add_options_page(
		__( 'distribute', 'distribute' ),
		__( 'distribute', 'distribute' ),
		'manage_options',
		SETTINGS_PAGE,
		__NAMESPACE__ . '\\render_settings_page'
	);
}

/**
 * A "Settings" link on the Plugins screen.
 *
 * @param array $links The plugin's action links.
 * @return array
 */
function settings_link( $links ) {
	$url = admin_url( 'options-general.php?page=' . SETTINGS_PAGE );
	array_unshift( $links, '<a href="' . esc_url( $url ) . '">' . esc_html__( 'Settings', 'distribute' ) . '</a>' );
	return $links;
}

/**
 * The section's introduction.
 *
 * @return void
 */
function section_intro() {
	echo '<p>' . esc_html__( 'The [distribute] shortcode and the distribute block use these values for whatever they leave out.', 'distribute' ) . '</p>';
}

/**
 * The server URL field.
 *
 * @return void
 */
function field_server_url() {
	printf(
		'<input type="url" class="regular-text code" id="distribute_server_url" name="%1$s[server_url]" value="%2$s" placeholder="https://compute.example.org" /><p class="description">%3$s</p>',
		esc_attr( OPTION ),
		esc_attr( settings()['server_url'] ),
		esc_html__( 'The distribute server that runs your campaigns. Your visitors\' browsers load the consent card from it and send it their results.', 'distribute' )
	);
}

/**
 * The default campaign field.
 *
 * @return void
 */
function field_campaign() {
	printf(
		'<input type="text" class="small-text" id="distribute_campaign" name="%1$s[campaign]" value="%2$s" inputmode="numeric" /><p class="description">%3$s</p>',
		esc_attr( OPTION ),
		esc_attr( settings()['campaign'] ),
		esc_html__( 'A campaign number, or "any" to help whichever campaign the server picks. [distribute] without campaign="…" shows this one.', 'distribute' )
	);
}

/**
 * The default throttle field.
 *
 * @return void
 */
function field_throttle() {
	$labels  = array(
		'low'    => __( 'low: one worker, a quarter of the time', 'distribute' ),
		'medium' => __( 'medium: half the cores, half the time', 'distribute' ),
		'high'   => __( 'high: all cores but one, all the time', 'distribute' ),
	);
	$current = settings()['throttle'];
	printf( '<select id="distribute_throttle" name="%s[throttle]">', esc_attr( OPTION ) );
	foreach ( spec()['throttle']['levels'] as $level ) {
		printf(
			'<option value="%1$s"%2$s>%3$s</option>',
			esc_attr( $level ),
			selected( $current, $level, false ),
			esc_html( isset( $labels[ $level ] ) ? $labels[ $level ] : $level )
		);
	}
	echo '</select><p class="description">' . esc_html__( 'What the CPU control starts at; visitors can change it.', 'distribute' ) . '</p>';
}

/**
 * The consent text field.
 *
 * @return void
 */
function field_consent_text() {
	printf(
		'<textarea class="large-text" rows="3" id="distribute_consent_text" name="%1$s[consent_text]" maxlength="500">%2$s</textarea><p class="description">%3$s</p>',
		esc_attr( OPTION ),
		esc_textarea( settings()['consent_text'] ),
		esc_html__( 'Optional. Shown above every embed, in your own words (plain text). Nothing runs until a visitor clicks Contribute in the card.', 'distribute' )
	);
}

/**
 * Settings → distribute.
 *
 * @return void
 */
function render_settings_page() {
	if ( ! current_user_can( 'manage_options' ) ) {
		return;
	}
	$settings = settings();
	$campaign = '' !== $settings['campaign'] ? $settings['campaign'] : '12';
	?>
	<div class="wrap">
		<h1><?php echo esc_html( get_admin_page_title() ); ?></h1>
		<p><?php esc_html_e( 'Let your visitors lend their spare computing power to a distribute campaign. They see a small card and a Contribute button; nothing loads or runs until they click it.', 'distribute' ); ?></p>
		<form action="options.php" method="post">
			<?php
			settings_fields( SETTINGS_PAGE );
			do_settings_sections( SETTINGS_PAGE );
			submit_button();
			?>
		</form>
		<h2><?php esc_html_e( 'Using it', 'distribute' ); ?></h2>
		<p>
			<?php esc_html_e( 'In the block editor, add the "distribute" block. Anywhere shortcodes work:', 'distribute' ); ?>
			<code>[distribute campaign="<?php echo esc_html( $campaign ); ?>"]</code>
		</p>
		<p><?php esc_html_e( 'Options: campaign, server, height (pixels), throttle (low, medium or high).', 'distribute' ); ?></p>
	</div>
	<?php
}

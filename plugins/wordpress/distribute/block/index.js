/**
 * The distribute block in the editor: no build step, plain ES5 on WordPress's globals
 * (dependencies in index.asset.php). The front end is rendered by the server (render.php), and the
 * editor previews it through the same rendering (ServerSideRender).
 */
( function ( wp ) {
	'use strict';

	var el = wp.element.createElement;
	var __ = wp.i18n.__;
	var blockEditor = wp.blockEditor;
	var components = wp.components;
	var ServerSideRender = wp.serverSideRender;

	function setter( props, name ) {
		return function ( value ) {
			var change = {};
			change[ name ] = value;
			props.setAttributes( change );
		};
	}

	function controls( props ) {
		var attributes = props.attributes;
		return el(
			blockEditor.InspectorControls,
			{},
			el(
				components.PanelBody,
				{ title: __( 'Campaign', 'distribute' ), initialOpen: true },
				el( components.TextControl, {
					label: __( 'Campaign', 'distribute' ),
					help: __( 'A campaign number, or "any". Empty: the default from Settings → distribute.', 'distribute' ),
					value: attributes.campaign,
					onChange: setter( props, 'campaign' ),
				} ),
				el( components.TextControl, {
					label: __( 'Server URL', 'distribute' ),
					help: __( 'Empty: the server from Settings → distribute.', 'distribute' ),
					type: 'url',
					value: attributes.server,
					onChange: setter( props, 'server' ),
				} ),
				el( components.SelectControl, {
					label: __( 'CPU setting', 'distribute' ),
					help: __( 'What the CPU control starts at; visitors can change it.', 'distribute' ),
					value: attributes.throttle,
					options: [
						{ label: __( 'Site default', 'distribute' ), value: '' },
						{ label: __( 'low', 'distribute' ), value: 'low' },
						{ label: __( 'medium', 'distribute' ), value: 'medium' },
						{ label: __( 'high', 'distribute' ), value: 'high' },
					],
					onChange: setter( props, 'throttle' ),
				} ),
				el( components.TextControl, {
					label: __( 'Site key', 'distribute' ),
					help: __( 'Optional: the key of this site, registered in the distribute console. On this site\'s pages, only what its policy admits runs.', 'distribute' ),
					value: attributes.site,
					onChange: setter( props, 'site' ),
				} ),
				el( components.TextControl, {
					label: __( 'Height (pixels)', 'distribute' ),
					help: __( 'From 120 to 2000. Empty: 220.', 'distribute' ),
					type: 'number',
					min: 120,
					max: 2000,
					value: attributes.height === undefined ? '' : String( attributes.height ),
					onChange: function ( value ) {
						var height = parseInt( value, 10 );
						props.setAttributes( { height: isNaN( height ) ? undefined : height } );
					},
				} )
			)
		);
	}

	wp.blocks.registerBlockType( 'distribute/embed', {
		edit: function ( props ) {
			return el(
				'div',
				blockEditor.useBlockProps(),
				controls( props ),
				el( ServerSideRender, { block: 'distribute/embed', attributes: props.attributes } )
			);
		},
		save: function () {
			return null;
		},
	} );
} )( window.wp );

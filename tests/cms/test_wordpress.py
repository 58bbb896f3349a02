"""The WordPress plugin in a real WordPress: Debian's package on PHP's built-in server, a private MariaDB.

Posts are created inside WordPress (wp_insert_post, as an administrator, so that whatever a post
says reaches the plugin unfiltered) and read over HTTP like a visitor or a logged-in editor would.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from distribute.embed import embed_snippet
from tests.cms.snippet import CASES
from tests.cms.wordpress import EDITOR, Elements, WordPress, iframes

SERVER = "https://compute.example.org"
SETTINGS_PAGE = "/wp-admin/options-general.php?page=distribute"


@pytest.fixture(autouse=True)
def no_php_notices_from_the_plugin(wordpress: WordPress) -> Iterator[None]:
    """Every test also checks that the plugin made PHP log nothing (WP_DEBUG is on)."""
    before = len(wordpress.debug_log())
    yield
    ours = [line for line in wordpress.debug_log()[before:].splitlines() if "distribute" in line.lower()]
    assert not ours, "the plugin logged PHP messages:\n" + "\n".join(ours)


def visit(wordpress: WordPress, url: str, client: httpx.Client | None = None) -> str:
    with wordpress.client() as anonymous:
        response = (client or anonymous).get(url)
    assert response.status_code == 200, response.text[-2000:]
    return response.text


def attributes_of(snippet: str) -> list[tuple[str, str | None]]:
    (only,) = iframes(snippet)
    return only


# --------------------------------------------------------------------------- what posts show


def test_the_plugin_registers_its_shortcode_and_block(wordpress: WordPress) -> None:
    registered = wordpress.php(
        "return array( shortcode_exists( 'distribute' ),"
        " WP_Block_Type_Registry::get_instance()->is_registered( 'distribute/embed' ) );"
    )
    assert registered == [True, True]


@pytest.mark.parametrize("form", ["shortcode", "block"])
def test_a_post_shows_exactly_distributes_own_snippet(wordpress: WordPress, form: str) -> None:
    wordpress.set_settings()
    content = "\n\n".join(case.shortcode() if form == "shortcode" else case.block() for case in CASES)
    page = visit(wordpress, wordpress.create_post(f"Every {form}", content).url)
    assert iframes(page) == [attributes_of(case.expected()) for case in CASES]  # attribute by attribute, in order
    for case in CASES:
        assert case.expected() in page  # and byte for byte


@pytest.mark.parametrize("form", ["[distribute]", "<!-- wp:distribute/embed /-->"])
def test_what_an_embed_leaves_out_comes_from_the_settings(wordpress: WordPress, form: str) -> None:
    wordpress.set_settings(server_url=SERVER, campaign="5", throttle="high")
    page = visit(wordpress, wordpress.create_post("Defaults", form).url)
    assert iframes(page) == [attributes_of(embed_snippet(SERVER, 5, throttle="high"))]


def test_what_an_embed_says_overrides_the_settings(wordpress: WordPress) -> None:
    wordpress.set_settings(server_url=SERVER, campaign="5", throttle="high")
    post = wordpress.create_post("Overrides", '[distribute campaign="6" throttle="low" server="http://127.0.0.1:9"]')
    assert iframes(visit(wordpress, post.url)) == [attributes_of(embed_snippet("http://127.0.0.1:9", 6))]


def test_the_consent_text_is_shown_above_the_iframe_escaped(wordpress: WordPress) -> None:
    consent = 'Nothing runs until you click <b>Contribute</b> & "you" can stop any time.'
    wordpress.set_settings(server_url=SERVER, consent_text=consent)
    page = visit(wordpress, wordpress.create_post("Consent", '[distribute campaign="3"]').url)
    (shown,) = Elements(page).find("p", "distribute-consent")
    assert shown.text == consent
    assert "&lt;b&gt;Contribute&lt;/b&gt;" in page and "<b>Contribute</b>" not in page
    assert page.index("distribute-consent") < page.index("<iframe")


def test_an_embed_without_server_or_campaign_tells_editors_and_shows_visitors_nothing(wordpress: WordPress) -> None:
    wordpress.set_settings()
    post = wordpress.create_post("Unconfigured", '[distribute]\n\n[distribute server="https://compute.example.org"]')
    with wordpress.login() as admin:
        notices = [p.text for p in Elements(visit(wordpress, post.url, admin)).find("p", "distribute-error")]
    assert len(notices) == 2
    assert "No distribute server is set" in notices[0]
    assert "No campaign is set" in notices[1]
    visitor_page = visit(wordpress, post.url)
    assert not Elements(visitor_page).find("p", "distribute-error")
    assert not iframes(visitor_page)


# --------------------------------------------------------------------------- hostile attributes

PAYLOAD = "window.__pwned=1"
HOSTILE = (
    f'[distribute campaign=\'12" onload="{PAYLOAD}\' server="{SERVER}"]',
    f'[distribute campaign="12" server=\'https://x.example/"><script>{PAYLOAD}</script>\']',
    f'[distribute campaign="12" server="javascript:{PAYLOAD}//"]',
    f'[distribute campaign="12" server="{SERVER}" height=\'300" onload="{PAYLOAD}\']',
    f'[distribute campaign="12" server="{SERVER}" throttle="<img src=x onerror={PAYLOAD}>"]',
    f'<!-- wp:distribute/embed {{"campaign":"\\u003cscript\\u003e{PAYLOAD}\\u003c/script\\u003e","server":"{SERVER}"}} /-->',
    f'<!-- wp:distribute/embed {{"campaign":"12","server":"{SERVER}\\u0022 onload=\\u0022{PAYLOAD}"}} /-->',
)


def assert_nothing_executable(page: str) -> None:
    elements = Elements(page)
    for element in elements.elements:
        handlers = [name for name, _ in element.attributes if name.startswith("on")]
        assert not handlers, f"<{element.tag}> has event handlers {handlers}"
        assert not (element.tag == "img" and dict(element.attributes).get("src") == "x")
    assert not [s for s in elements.find("script") if PAYLOAD in s.text]
    assert not iframes(page)


@pytest.fixture(scope="module")
def hostile_post(wordpress: WordPress) -> str:
    return wordpress.create_post("Hostile attributes", "\n\n".join(HOSTILE)).url


def test_hostile_attribute_values_are_shown_to_editors_escaped_never_as_markup(
    wordpress: WordPress, hostile_post: str
) -> None:
    wordpress.set_settings()
    with wordpress.login() as admin:
        page = visit(wordpress, hostile_post, admin)
    assert_nothing_executable(page)
    notices = [p.text for p in Elements(page).find("p", "distribute-error")]
    assert len(notices) == len(HOSTILE)
    assert all(PAYLOAD in notice for notice in notices)  # the value, as text
    assert "&lt;script&gt;" in page


def test_hostile_attribute_values_show_visitors_nothing(wordpress: WordPress, hostile_post: str) -> None:
    wordpress.set_settings()
    page = visit(wordpress, hostile_post)
    assert_nothing_executable(page)
    assert PAYLOAD not in page


# --------------------------------------------------------------------------- who may choose the server

OTHER_SERVER = "https://elsewhere.example.net"


@pytest.mark.parametrize(
    "content",
    [
        f'[distribute campaign="12" server="{OTHER_SERVER}"]',
        f'<!-- wp:distribute/embed {{"campaign":"12","server":"{OTHER_SERVER}"}} /-->',
    ],
    ids=["shortcode", "block"],
)
def test_a_contributors_post_cannot_point_the_iframe_at_another_server(wordpress: WordPress, content: str) -> None:
    wordpress.set_settings(server_url=SERVER)
    post = wordpress.create_post("A contributor's embed", content, author=wordpress.contributor_id)
    assert not iframes(visit(wordpress, post.url))
    with wordpress.login() as admin:
        notices = [p.text for p in Elements(visit(wordpress, post.url, admin)).find("p", "distribute-error")]
    assert len(notices) == 1
    assert "unfiltered_html" in notices[0]


@pytest.mark.parametrize("server", ["", SERVER, SERVER + "/"])
def test_a_contributors_post_may_use_the_configured_server(wordpress: WordPress, server: str) -> None:
    wordpress.set_settings(server_url=SERVER)
    post = wordpress.create_post(
        "A contributor's embed", f'[distribute campaign="12" server="{server}"]', author=wordpress.contributor_id
    )
    (only,) = iframes(visit(wordpress, post.url))
    assert dict(only)["src"].startswith(SERVER + "/embed/12")


def test_an_author_with_unfiltered_html_may_choose_any_server(wordpress: WordPress) -> None:
    wordpress.set_settings(server_url=SERVER)
    assert wordpress.php("return user_can( $args['id'], 'unfiltered_html' );", id=wordpress.editor_id) is True
    post = wordpress.create_post(
        "An editor's embed", f'[distribute campaign="12" server="{OTHER_SERVER}"]', author=wordpress.editor_id
    )
    (only,) = iframes(visit(wordpress, post.url))
    assert dict(only)["src"].startswith(OTHER_SERVER + "/embed/12")


# --------------------------------------------------------------------------- the settings page


def settings_form(client: httpx.Client) -> dict[str, str]:
    """The hidden fields of the settings form (option_page, action, _wpnonce, _wp_http_referer)."""
    response = client.get(SETTINGS_PAGE)
    assert response.status_code == 200, response.text[-2000:]
    hidden = {}
    for element in Elements(response.text).find("input"):
        attributes = dict(element.attributes)
        if attributes.get("type") == "hidden" and attributes.get("name"):
            hidden[attributes["name"]] = attributes.get("value") or ""
    return hidden


NEW_SETTINGS = {
    "distribute_settings[server_url]": "https://compute.example.org/",
    "distribute_settings[campaign]": "42",
    "distribute_settings[throttle]": "medium",
    "distribute_settings[consent_text]": "Thank you for helping science.",
}


def test_the_settings_page_saves_with_a_valid_nonce(wordpress: WordPress) -> None:
    wordpress.set_settings()
    with wordpress.login() as admin:
        response = admin.post("/wp-admin/options.php", data={**settings_form(admin), **NEW_SETTINGS})
    assert response.status_code == 302
    assert "settings-updated=true" in response.headers["location"]
    assert wordpress.get_settings() == {
        "server_url": "https://compute.example.org",
        "campaign": "42",
        "consent_text": "Thank you for helping science.",
        "throttle": "medium",
    }


@pytest.mark.parametrize("nonce", [None, "0123456789"], ids=["without nonce", "forged nonce"])
def test_the_settings_page_refuses_a_save_without_a_valid_nonce(wordpress: WordPress, nonce: str | None) -> None:
    wordpress.set_settings(server_url=SERVER)
    with wordpress.login() as admin:
        form = settings_form(admin)
        del form["_wpnonce"]
        if nonce is not None:
            form["_wpnonce"] = nonce
        response = admin.post("/wp-admin/options.php", data={**form, **NEW_SETTINGS})
    assert response.status_code == 403
    assert "The link you followed has expired" in response.text
    assert wordpress.get_settings()["server_url"] == SERVER


def test_the_settings_page_is_for_administrators_only(wordpress: WordPress) -> None:
    wordpress.set_settings(server_url=SERVER)
    with wordpress.login(EDITOR) as editor:
        assert editor.get(SETTINGS_PAGE).status_code == 403
        with wordpress.login() as admin:
            form = settings_form(admin)  # even with an administrator's form
        assert editor.post("/wp-admin/options.php", data={**form, **NEW_SETTINGS}).status_code == 403
    assert wordpress.get_settings()["server_url"] == SERVER


def test_the_settings_page_refuses_an_invalid_server_and_keeps_the_saved_one(wordpress: WordPress) -> None:
    wordpress.set_settings(server_url=SERVER)
    hostile = {**NEW_SETTINGS, "distribute_settings[server_url]": "javascript:alert(1)"}
    with wordpress.login() as admin:
        assert admin.post("/wp-admin/options.php", data={**settings_form(admin), **hostile}).status_code == 302
        page = admin.get(SETTINGS_PAGE + "&settings-updated=true").text
    assert "The server URL must be an http:// or https:// address" in page
    assert wordpress.get_settings()["server_url"] == SERVER
    assert wordpress.get_settings()["campaign"] == "42"  # the valid fields were saved


def test_the_settings_page_escapes_the_saved_values(wordpress: WordPress) -> None:
    wordpress.set_settings(consent_text=f'</textarea><script>{PAYLOAD}</script>"')
    with wordpress.login() as admin:
        page = admin.get(SETTINGS_PAGE).text
    assert_nothing_executable(page)
    assert (
        'id="distribute_consent_text" name="distribute_settings[consent_text]" maxlength="500">&lt;/textarea&gt;'
        in page
    )


# --------------------------------------------------------------------------- uninstalling


def test_uninstalling_removes_the_settings(wordpress: WordPress) -> None:
    wordpress.set_settings(server_url=SERVER)
    gone = wordpress.php(
        "uninstall_plugin( 'distribute/distribute.php' ); return get_option( 'distribute_settings', 'gone' );"
    )
    assert gone == "gone"
    assert wordpress.php("return is_plugin_active( 'distribute/distribute.php' );")  # the files stay until deleted

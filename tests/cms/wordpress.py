"""A real WordPress for the tests: Debian's `wordpress` on PHP's built-in server, with a private MariaDB.

MariaDB gets its own data directory and socket in a temporary directory and listens on no port
(`--skip-networking`). WordPress is copied from /usr/share/wordpress with `cp -rL` (Debian symlinks
its JavaScript libraries), gets its own wp-config.php (no external HTTP, no cron, debug log on),
is installed by `wp-tools/install.php`, then gets the plugin (copied from plugins/wordpress/distribute,
as a site owner would upload it, or installed from a plugin zip by WordPress's own `Plugin_Upgrader`,
the code behind Plugins → Add New → Upload Plugin) and a minimal theme (`wp-theme/`). `WordPress.php()` runs PHP code
inside it for setup and inspection. Everything comes from the Debian packages the Makefile
installs (APT_PACKAGES); when one is missing or a server does not start, the fixture fails with why.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "wordpress" / "distribute"
HERE = Path(__file__).parent
TOOLS = HERE / "wp-tools"
THEME = HERE / "wp-theme"
WORDPRESS_SOURCE = Path("/usr/share/wordpress")
PASSWORD = "correct horse battery staple"
EDITOR = "editor"
CONTRIBUTOR = "contributor"


def require_program(name: str, package: str) -> str:
    """The program's path; fails (never skips) when the Debian package that provides it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs the Debian package {package} (APT_PACKAGES)")
    return path


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ends a server this module started (its own process group), waiting a bounded time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --------------------------------------------------------------------------- MariaDB


@dataclass
class MariaDB:
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, base: Path) -> MariaDB:
        install_db = require_program("mariadb-install-db", "mariadb-server")
        mariadbd = require_program("mariadbd", "mariadb-server")
        client = require_program("mariadb", "mariadb-server")
        datadir, sock, log = base / "data", base / "mysqld.sock", base / "mariadb.log"
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        installed = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *as_root,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if installed.returncode != 0:
            pytest.fail(f"mariadb-install-db failed:\n{installed.stdout[-2000:]}\n{installed.stderr[-2000:]}")
        process = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={sock}",
                "--skip-networking",
                f"--pid-file={base / 'mysqld.pid'}",
                f"--log-error={log}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                *as_root,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        db = cls(sock, process, log)
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [client, "--no-defaults", f"--socket={sock}", "-uroot", "-e", "CREATE DATABASE wordpress"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if ready.returncode == 0:
                return db
            if process.poll() is not None or time.monotonic() > deadline:
                db.stop()
                pytest.fail(f"MariaDB did not start ({ready.stderr.strip()}); its log:\n{tail(log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop(self.process)


# --------------------------------------------------------------------------- WordPress

WP_CONFIG = """<?php
// Written by tests/cms/wordpress.py: a private database, no external HTTP, no cron, a debug log.
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', 'localhost:{socket}' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
define( 'WP_HOME', '{url}' );
define( 'WP_SITEURL', '{url}' );
define( 'WP_CONTENT_DIR', __DIR__ . '/wp-content' );
define( 'WP_CONTENT_URL', '{url}/wp-content' );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'DISABLE_WP_CRON', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_DISPLAY', false );
define( 'WP_DEBUG_LOG', __DIR__ . '/debug.log' );
{keys}
$table_prefix = 'wp_';
define( 'ABSPATH', __DIR__ . '/' );
require_once ABSPATH . 'wp-settings.php';
"""

KEYS = (
    "AUTH_KEY",
    "SECURE_AUTH_KEY",
    "LOGGED_IN_KEY",
    "NONCE_KEY",
    "AUTH_SALT",
    "SECURE_AUTH_SALT",
    "LOGGED_IN_SALT",
    "NONCE_SALT",
)

# What Plugins → Add New → Upload Plugin does once the zip is uploaded (wp-admin/update.php's
# upload-plugin action), without the HTTP upload: Plugin_Upgrader unpacks the zip into wp-content/plugins.
INSTALL_ZIP = """
require_once ABSPATH . 'wp-admin/includes/admin.php';  // file, misc, plugin-install: what update.php has loaded
require_once ABSPATH . 'wp-admin/includes/class-wp-upgrader.php';
if ( ! defined( 'FS_METHOD' ) ) { define( 'FS_METHOD', 'direct' ); }
$skin = new WP_Ajax_Upgrader_Skin();
$upgrader = new Plugin_Upgrader( $skin );
$installed = $upgrader->install( $args['zip'] );
if ( true !== $installed ) {
    return array( 'error' => is_wp_error( $installed ) ? $installed->get_error_message() : $skin->get_error_messages() );
}
return array( 'plugin' => $upgrader->plugin_info() );
"""

SETUP = """
$activated = activate_plugin( 'distribute/distribute.php' );
if ( is_wp_error( $activated ) ) { return $activated->get_error_message(); }
switch_theme( 'distribute-test' );
$editor = wp_insert_user( array( 'user_login' => $args['editor'], 'user_pass' => $args['password'],
    'user_email' => 'editor@example.org', 'role' => 'editor' ) );
$contributor = wp_insert_user( array( 'user_login' => $args['contributor'], 'user_pass' => $args['password'],
    'user_email' => 'contributor@example.org', 'role' => 'contributor' ) );
// No welcome guide in the block editor.
update_user_meta( 1, $GLOBALS['wpdb']->get_blog_prefix() . 'persisted_preferences',
    array( 'core/edit-post' => array( 'welcomeGuide' => false ), '_modified' => gmdate( 'c' ) ) );
return array( 'active' => is_plugin_active( 'distribute/distribute.php' ), 'editor' => $editor,
    'contributor' => $contributor );
"""


@dataclass(frozen=True)
class Post:
    id: int
    url: str


@dataclass
class WordPress:
    root: Path
    url: str
    db: MariaDB
    server: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    editor_id: int = 0
    contributor_id: int = 0
    plugin_zip: Path | None = None

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    @classmethod
    def start(cls, base: Path, *, plugin_zip: Path | None = None) -> WordPress:
        """A fresh WordPress with the plugin, copied from the checkout or installed from `plugin_zip`."""
        php = require_program("php", "php-cli")
        if not (WORDPRESS_SOURCE / "wp-settings.php").exists():
            pytest.fail("/usr/share/wordpress is missing: `make test` installs the Debian package wordpress")
        checked = subprocess.run([php, "-r", "echo extension_loaded('mysqli') ? 'yes' : 'no';"], capture_output=True)
        if checked.stdout != b"yes":
            pytest.fail("PHP has no mysqli: `make test` installs the Debian package php-mysql")
        db = MariaDB.start(base / "mariadb")
        port = free_port()
        wordpress = cls(base / "wordpress", f"http://localhost:{port}", db, plugin_zip=plugin_zip)
        try:
            wordpress._install(php)
            wordpress._serve(php, port)
        except BaseException:
            wordpress.stop()
            raise
        return wordpress

    def _install(self, php: str) -> None:
        subprocess.run(["cp", "-rL", str(WORDPRESS_SOURCE), str(self.root)], check=True, timeout=60)
        keys = "\n".join(f"define( '{key}', '{secrets.token_hex(24)}' );" for key in KEYS)
        (self.root / "wp-config.php").write_text(
            WP_CONFIG.replace("{socket}", str(self.db.socket)).replace("{url}", self.url).replace("{keys}", keys)
        )
        if self.plugin_zip is None:
            shutil.copytree(PLUGIN, self.root / "wp-content" / "plugins" / "distribute")
        shutil.copytree(THEME, self.root / "wp-content" / "themes" / "distribute-test")
        installed = subprocess.run(
            [php, str(TOOLS / "install.php"), str(self.root), self.host, PASSWORD],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if installed.returncode != 0 or '"user_id":1' not in installed.stdout:
            pytest.fail(f"installing WordPress failed:\n{installed.stdout[-3000:]}\n{installed.stderr[-3000:]}")
        if self.plugin_zip is not None:
            self.install_plugin_zip(self.plugin_zip)
        setup = self.php(SETUP, editor=EDITOR, contributor=CONTRIBUTOR, password=PASSWORD)
        if not isinstance(setup, dict) or not setup["active"]:
            pytest.fail(f"activating the plugin failed: {setup}")
        self.editor_id = setup["editor"]
        self.contributor_id = setup["contributor"]

    def _serve(self, php: str, port: int) -> None:
        self.log = self.root.parent / "php-server.log"
        with self.log.open("wb") as log:
            self.server = subprocess.Popen(
                [php, "-S", f"127.0.0.1:{port}", "-t", str(self.root), str(TOOLS / "router.php")],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PHP_CLI_SERVER_WORKERS": "4"},
            )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/wp-login.php", timeout=5).status_code == 200:
                    return
            if self.server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PHP's built-in server did not serve WordPress; its log:\n{tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server)
        self.db.stop()

    # ----------------------------------------------------------------------- inside WordPress

    def php(self, code: str, *, user: int = 1, **args: Any) -> Any:
        """Runs `code` (a PHP function body; `$args` holds the keyword arguments) as `user`; returns its value."""
        ran = subprocess.run(
            [
                require_program("php", "php-cli"),
                "-d",
                "display_errors=stderr",
                str(TOOLS / "eval.php"),
                str(self.root),
                self.host,
                str(user),
            ],
            input=code,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "WP_TEST_ARGS": json.dumps(args)},
        )
        _, marker, result = ran.stdout.rpartition("\n--RESULT--\n")
        if ran.returncode != 0 or not marker:
            raise AssertionError(f"PHP failed ({ran.returncode}):\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}")
        return json.loads(result)

    def install_plugin_zip(self, zip_path: Path) -> str:
        """Installs a plugin zip as the upload path does; returns the plugin's file (e.g. distribute/distribute.php)."""
        # The upgrader deletes the package it unpacked, as it deletes an uploaded one.
        package = self.root.parent / zip_path.name
        shutil.copy2(zip_path, package)
        installed = self.php(INSTALL_ZIP, zip=str(package))
        if not isinstance(installed, dict) or not installed.get("plugin"):
            pytest.fail(f"installing the plugin zip {zip_path.name} failed: {installed}")
        return str(installed["plugin"])

    def create_post(self, title: str, content: str, *, author: int = 1) -> Post:
        created = self.php(
            "$id = wp_insert_post( wp_slash( array( 'post_title' => $args['title'], 'post_content' => $args['content'],"
            " 'post_status' => 'publish', 'post_author' => $args['author'] ) ), true );"
            " return is_wp_error( $id ) ? $id->get_error_message() : array( $id, get_permalink( $id ) );",
            title=title,
            content=content,
            author=author,
        )
        assert isinstance(created, list), created
        return Post(created[0], created[1])

    def get_settings(self) -> Any:
        return self.php("return get_option( 'distribute_settings', null );")

    def set_settings(self, **values: str) -> None:
        """Stores the plugin's settings directly (unset keys are blank, throttle low)."""
        settings = {"server_url": "", "campaign": "", "consent_text": "", "throttle": "low", **values}
        self.php("update_option( 'distribute_settings', $args['settings'] ); return true;", settings=settings)

    def debug_log(self) -> str:
        path = self.root / "debug.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ----------------------------------------------------------------------- over HTTP

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @contextlib.contextmanager
    def login(self, user: str = "admin", password: str = PASSWORD) -> Iterator[httpx.Client]:
        """An HTTP client logged in as `user`, the way a browser logs in through wp-login.php."""
        with self.client() as client:
            client.cookies.set("wordpress_test_cookie", "WP Cookie check")
            response = client.post(
                "/wp-login.php",
                data={
                    "log": user,
                    "pwd": password,
                    "wp-submit": "Log In",
                    "redirect_to": f"{self.url}/wp-admin/",
                    "testcookie": "1",
                },
            )
            assert response.status_code == 302, f"logging in as {user} failed: {response.status_code}"
            yield client


# --------------------------------------------------------------------------- reading pages


@dataclass
class Element:
    tag: str
    attributes: list[tuple[str, str | None]]
    text: str = ""


class Elements(HTMLParser):
    """Every element of a page with its attributes (unescaped, in order) and, for some, their text."""

    TEXT_OF = ("script", "p", "title")

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, attrs)
        self.elements.append(element)
        if tag in self.TEXT_OF:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1].tag == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def find(self, tag: str, class_name: str | None = None) -> list[Element]:
        found = [e for e in self.elements if e.tag == tag]
        if class_name is not None:
            found = [e for e in found if class_name in (dict(e.attributes).get("class") or "").split()]
        return found


def iframes(page: str) -> list[list[tuple[str, str | None]]]:
    """The attributes of every iframe on the page, in document order."""
    return [element.attributes for element in Elements(page).find("iframe")]

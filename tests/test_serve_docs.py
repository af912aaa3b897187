"""The server's OpenAPI pages work offline: ``/docs`` (Swagger UI) and ``/redoc`` load every script, stylesheet
and icon from the server itself, never from a CDN.

The server runs on 127.0.0.1 (uvicorn) and is read with ``httpx``: each page is parsed for the URLs a browser
would load, every one must be a path on the same server, and each must answer with its asset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.serve import ServeConfig, create_app
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(120)


class _Assets(HTMLParser):
    """The URLs a browser loads for a page: ``<script src>``, ``<link href>``, ``<img src>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {"script": "src", "link": "href", "img": "src"}
        for name, value in attrs:
            if tag in names and name == names[tag] and value:
                self.urls.append(value)


def page_assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    # The inline script of each page names the schema it loads (``url: '/openapi.json'`` / ``spec-url``).
    return parser.urls + re.findall(r"""(?:url:\s*|spec-url=)['"]([^'"]+)['"]""", html)


@pytest.fixture(scope="module")
def server(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=32)))
    router.add_models(
        [ModelRecord("org/asr", "asr", "Audio Automatic Speech Recognition", "Speech recognition model.")]
    )
    folder = tmp_path_factory.mktemp("serve-docs") / "router"
    router.save_pretrained(folder)
    with BackgroundServer(create_app(str(folder), ServeConfig(api_key="sekret"))) as running:
        yield running


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_openapi_pages_load_every_asset_from_the_server(
    server: BackgroundServer, page: str, script: str
) -> None:
    client = httpx.Client(base_url=server.url)
    response = client.get(page)  # the docs pages need no API key, like the schema
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = page_assets(response.text)
    assert any(url.endswith(script) for url in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from another host"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    loaded = {url.rsplit("/", 1)[-1]: client.get(url) for url in urls}
    assert "javascript" in loaded[script].headers["content-type"]
    assert len(loaded[script].content) > 500_000  # the real bundle, not a stub
    if page == "/docs":
        assert loaded["swagger-ui.css"].headers["content-type"].startswith("text/css")
        assert "SwaggerUIBundle" in loaded[script].text
    assert "/v1/route" in loaded["openapi.json"].json()["paths"]

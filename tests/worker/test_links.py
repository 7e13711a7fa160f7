"""The one GitHub host mapping: API URL → web, clone and API URLs (never from a payload)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fakes.github import FakeGitHub
from worker.links import GitHubHost, repo_problem


@pytest.mark.parametrize(
    ("api_url", "web", "api"),
    [
        ("https://api.github.com", "https://github.com", "https://api.github.com"),
        ("https://api.github.com/", "https://github.com", "https://api.github.com"),
        ("https://ghe.acme.com/api/v3", "https://ghe.acme.com", "https://ghe.acme.com/api/v3"),
        ("https://ghe.acme.com/api/v3/", "https://ghe.acme.com", "https://ghe.acme.com/api/v3"),
        ("https://GHE.acme.com:8443/api/v3", "https://ghe.acme.com:8443", None),
        ("https://api.acme.ghe.com", "https://acme.ghe.com", "https://api.acme.ghe.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("https://user:ghp_secret@ghe.acme.com/api/v3", "https://ghe.acme.com", None),
        ("http://[::1]:9000", "http://[::1]:9000", None),
    ],
)
def test_each_kind_of_github(api_url: str, web: str, api: str | None) -> None:
    host = GitHubHost.from_api_url(api_url)
    assert host.web_url == web
    assert host.clone_url("acme/ml") == f"{web}/acme/ml.git"
    assert host.repo_url("acme/ml") == f"{web}/acme/ml"
    if api is not None:
        assert host.api_url == api
    assert "ghp_secret" not in host.api_url + host.web_url


@pytest.mark.parametrize("api_url", ["", "/tmp/repo", "file:///tmp/repo", "ftp://x", "https://"])
def test_a_setting_that_is_not_an_http_url_is_refused(api_url: str) -> None:
    with pytest.raises(ValueError, match="GITHUB_API_URL"):
        GitHubHost.from_api_url(api_url)


@pytest.mark.parametrize(
    "repo",
    [
        "../../etc",
        "acme/..",
        "acme/.",
        "acme",
        "acme/ml/extra",
        "acme/ml?x=1",
        "acme/ml#x",
        "-acme/ml",
        "acme/ml\x00",
        "acme/" + "x" * 101,
        "/tmp/repo",
        "--upload-pack=touch /tmp/pwned",
    ],
)
def test_clone_urls_only_for_repository_names(repo: str) -> None:
    assert repo_problem(repo) is not None
    with pytest.raises(ValueError, match="not a repository name"):
        GitHubHost.from_api_url("https://api.github.com").clone_url(repo)


def test_managed_users_and_dotted_names_are_repositories() -> None:
    for repo in ("alice_acme/ml", "acme/ml.v2", "acme/.github", "a/b"):
        assert repo_problem(repo) is None


def test_the_fakes_clone_url_is_where_it_serves_git(tmp_path: Path) -> None:
    with FakeGitHub(tmp_path) as fake:
        fake.add_repo("acme/ml", {"README.md": "hi"})
        url = GitHubHost.from_api_url(fake.url).clone_url("acme/ml")
        out = subprocess.run(
            ["git", "ls-remote", "--end-of-options", url, "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert out.split()[0] == fake.head("acme/ml")

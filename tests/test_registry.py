"""Providers by name: built-in, registered, or declared by another distribution."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import ConfigError, ProviderError
from deployer.registry import PROVIDERS, get_provider, provider_names, register_provider

ACME_PROVIDER = """
class AcmeProvider:
    name = "acme"

    def __init__(self, *, region: str = "moon-1") -> None:
        if region == "mars-1":
            raise TypeError("a bug inside the provider")
        self.region = region
"""


@pytest.fixture
def acme_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "acme_provider.py").write_text(ACME_PROVIDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_registered_provider_is_found_by_name_with_its_options(acme_module: Path) -> None:
    register_provider("acme", "acme_provider:AcmeProvider")
    try:
        provider = get_provider("acme", {"region": "moon-2"})
        assert type(provider).__name__ == "AcmeProvider" and provider.region == "moon-2"  # type: ignore[attr-defined]
        assert "acme" in provider_names()
    finally:
        PROVIDERS.pop("acme")


def test_options_are_checked_against_the_constructor_and_named(acme_module: Path) -> None:
    register_provider("acme", "acme_provider:AcmeProvider")
    try:
        with pytest.raises(
            ConfigError, match=r"does not take these options \(zone\): it takes region"
        ):
            get_provider("acme", {"zone": "x"})
        # A TypeError inside the constructor is the provider's own, not a bad option.
        with pytest.raises(TypeError, match="a bug inside the provider"):
            get_provider("acme", {"region": "mars-1"})
    finally:
        PROVIDERS.pop("acme")
    with pytest.raises(ConfigError, match="provider 'local' does not take these options"):
        get_provider("local", {"region": "x"})


def test_another_distribution_adds_a_provider_through_an_entry_point(acme_module: Path) -> None:
    dist_info = acme_module / "acme_deployer-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-deployer\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[deployer.providers]\nacme = acme_provider:AcmeProvider\n"
    )
    assert "acme" not in PROVIDERS
    assert "acme" in provider_names()
    assert type(get_provider("acme")).__name__ == "AcmeProvider"


def test_unknown_and_unavailable_providers_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown provider 'nope': choose one of local, aws"):
        get_provider("nope")
    monkeypatch.setitem(PROVIDERS, "mars", ("deployer.providers.mars.provider:MarsProvider", None))
    with pytest.raises(ProviderError, match="provider 'mars' is not available in this version"):
        get_provider("mars")
    assert "mars" not in provider_names(available=True)
    assert "azure" in provider_names(available=True)
    with pytest.raises(ConfigError, match="'package.module:Class'"):
        register_provider("broken", "no_colon_here")


def test_typed_options_are_the_dicts_keys_and_the_wrong_type_is_named() -> None:
    from deployer import AwsOptions, GcpOptions

    aws = get_provider("aws", AwsOptions(architecture="arm64", slim=True))
    assert (aws.architecture, aws.slim) == ("arm64", True)  # type: ignore[attr-defined]
    same = get_provider("aws", {"architecture": "arm64", "slim": True})
    assert (same.architecture, same.slim) == ("arm64", True)  # type: ignore[attr-defined]
    gcp = get_provider("gcp", GcpOptions(project="acme-ml", region="europe-west1"))
    assert gcp.project == "acme-ml" and gcp.region == "europe-west1"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="takes options of type AwsOptions or a dict, not Gcp"):
        get_provider("aws", GcpOptions(project="acme-ml"))
    with pytest.raises(ConfigError, match="'local' takes no options, not AwsOptions"):
        get_provider("local", AwsOptions())
    with pytest.raises(ConfigError, match="must be a dict or the provider's options object"):
        get_provider("aws", ["arm64"])

"""``provider_options`` of provider "azure", typed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AzureOptions:
    """``provider_options`` of provider "azure" (a dict with these keys works too).

    >>> deployer.deploy(predict, name="scores", provider="azure",
    ...                 output="az://predictions/runs",
    ...                 provider_options=AzureOptions(subscription_id="...",
    ...                                               resource_group="ml",
    ...                                               location="westeurope",
    ...                                               storage_account="acmedata"))
    """

    subscription_id: str | None = None
    """The subscription (default: AZURE_SUBSCRIPTION_ID)."""
    resource_group: str | None = None
    """The resource group the function app and what deployer makes for it live in
    (default: AZURE_RESOURCE_GROUP); it must exist."""
    location: str | None = None
    """Where new resources are made, e.g. "westeurope" (default: AZURE_LOCATION);
    a region that offers the Flex Consumption plan."""
    storage_account: str | None = None
    """The storage account of ``az://container/path`` outputs and inputs, which name
    none (default: AZURE_STORAGE_ACCOUNT_NAME); ``abfs://container@account...``
    URLs name their own."""

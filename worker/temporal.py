"""Connecting to Temporal from settings, and registering the search attributes runs carry."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from worker.contract import INT_ATTRIBUTES, KEYWORD_ATTRIBUTES
from worker.settings import Settings

SA_REFUSED = (
    "this Temporal server does not let workers register search attributes (Temporal Cloud "
    "manages them with tcld); add them once, e.g. `tcld namespace search-attributes add "
    "--namespace NS --search-attribute NAME=Keyword` for each of: {names} (SkyrunPr is Int)"
)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS for Temporal Cloud or a self-hosted server with mTLS; plain TCP for the dev server."""
    paths = (
        settings.temporal_tls_cert_path,
        settings.temporal_tls_key_path,
        settings.temporal_tls_ca_path,
    )
    if not settings.temporal_tls and not any(paths):
        # An API key implies TLS (Temporal Cloud does not accept plaintext API keys).
        return settings.temporal_api_key is not None
    cert, key, ca = (path.read_bytes() if path else None for path in paths)
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=tls_config(settings),
        lazy=lazy,
    )


def search_attribute_flags() -> list[str]:
    """`--search-attribute` flags that register ours on `temporal server start-dev`."""
    flags: list[str] = []
    for name in KEYWORD_ATTRIBUTES:
        flags += ["--search-attribute", f"{name}=Keyword"]
    for name in INT_ATTRIBUTES:
        flags += ["--search-attribute", f"{name}=Int"]
    return flags


async def ensure_search_attributes(client: Client) -> None:
    """Register missing search attributes (idempotent)."""
    wanted = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in KEYWORD_ATTRIBUTES}
    wanted.update({name: IndexedValueType.INDEXED_VALUE_TYPE_INT for name in INT_ATTRIBUTES})
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k: v for k, v in wanted.items() if k not in existing.custom_attributes}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise RuntimeError(SA_REFUSED.format(names=", ".join(sorted(missing)))) from None
        if err.status is not RPCStatusCode.ALREADY_EXISTS:
            raise

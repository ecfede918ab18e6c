"""Where the Kubernetes routers' inputs come from: API credentials (a kubeconfig, the pod's
in-cluster config, ~/.kube/config) and the objects of a `--current` file (offline runs).
"""

from __future__ import annotations

from typing import Any

from analyzer.routers.base import RouterError


def api_client_from_config(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from an explicit kubeconfig, else in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    try:
        if kubeconfig:
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except config.ConfigException:
            return config.new_client_from_config(context=context)
    except (config.ConfigException, OSError, TypeError, ValueError) as e:
        where = kubeconfig or "in-cluster config or ~/.kube/config"
        raise RouterError(
            f"cannot load Kubernetes credentials from {where}: {e}; pass --kubeconfig PATH, "
            "or use --dry-run with --current FILE to work offline"
        ) from None


def load_objects(text: str, source: str = "--current") -> list[dict[str, Any]]:
    """Objects from YAML or JSON text: one document, several, or a `kind: List`."""
    import yaml

    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise RouterError(f"{source}: not valid YAML or JSON: {e}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise RouterError(
                f"{source}: expected Kubernetes objects, found a {type(doc).__name__}")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            objects.extend(i for i in doc["items"] if isinstance(i, dict))
        else:
            objects.append(doc)
    for obj in objects:
        meta = obj.get("metadata")
        if not obj.get("kind") or not isinstance(meta, dict) or not meta.get("name"):
            raise RouterError(f"{source}: every object needs kind and metadata.name")
    return objects

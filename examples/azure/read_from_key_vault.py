"""Read Azure Key Vault secrets through leaseline, as a training task on AKS or Azure ML would.

Against a real vault (credentials from DefaultAzureCredential: workload identity on AKS, the
compute's managed identity on Azure ML, AZURE_* environment variables, or `az login`)::

    python examples/azure/read_from_key_vault.py azure-kv://my-vault/openai-key

Without Azure, ``--demo`` runs the same code against the local HTTPS fake of the Key Vault API
that the tests use (run it from the repository root)::

    python examples/azure/read_from_key_vault.py --demo

Values are never printed: the script reports which fields it got and how long they are.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

import leaseline
from leaseline._config import Config


def report(resolver: leaseline.Resolver, ref: str) -> None:
    secret = resolver.get(ref)
    print(f"{ref}: {secret!r}")
    for field in secret.fields:
        print(f"  {field}: {len(secret.reveal(field))} characters")


def report_age(resolver: leaseline.Resolver, ref: str) -> None:
    meta = resolver.metadata(ref)  # one more store read: rotation checks, not the hot path
    updated, expires = meta.extra.get("updated_on"), meta.extra.get("expires_on")
    print(f"  version {meta.version}, updated {updated}, expires {expires or 'never'}")


def demo() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.servers.azure_kv import FakeKeyVault

    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeKeyVault.start(Path(tmp))
        try:
            os.environ["AZURE_DEMO_TOKEN"] = fake.token
            fake.set_secret(
                "ml-keys",
                "openai",
                json.dumps({"api_key": "sk-demo-" + secrets.token_hex(16), "org": "org-demo"}),
            )
            config = Config.from_mapping(
                {
                    "stores": {
                        "kv": {
                            "type": "azure-kv",
                            "url_template": fake.url_template(),  # a real vault needs none of this:
                            "credential": "static-token",  # credential = "default"
                            "token": "env://AZURE_DEMO_TOKEN",
                            "verify": str(fake.ca_bundle),  # the fake's test CA
                            "verify_challenge_resource": False,  # the fake is not *.vault.azure.net
                        }
                    }
                }
            )
            with leaseline.Resolver(config) as resolver:
                report(resolver, "kv://ml-keys/openai")
                for _ in range(100):
                    resolver.resolve("kv://ml-keys/openai#api_key")
                reads = len(fake.reads("ml-keys", "openai"))
                print(f"store reads for 101 lookups: {reads}")
                report_age(resolver, "kv://ml-keys/openai")
        finally:
            fake.stop()


def main(argv: list[str]) -> int:
    if argv == ["--demo"]:
        demo()
        return 0
    if not argv:
        print(__doc__)
        return 2
    with leaseline.Resolver() as resolver:
        for ref in argv:
            report(resolver, ref)
            report_age(resolver, ref)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

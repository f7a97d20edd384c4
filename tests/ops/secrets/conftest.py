from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from keyvault_standin import KeyVaultStandIn


@pytest.fixture
def keyvault(tmp_path: Path) -> Iterator[KeyVaultStandIn]:
    ca = trustme.CA()
    ca_file = tmp_path / "standin-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    standin = KeyVaultStandIn(ca_file)
    standin.start(ca)
    yield standin
    standin.stop()

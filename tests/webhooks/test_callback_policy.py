"""The SSRF guard: callback URLs must resolve only to public addresses unless allowlisted."""

from __future__ import annotations

import socket

import pytest

from overnight._exceptions import InvalidRequestError
from overnight.server.callbacks import CallbackPolicy, check_callback_url, check_ip, redact_url, resolve_and_check


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"IP literals must not be resolved (asked for {host})")


def fixed_dns(*addresses: str):
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/hook",
        "http://192.168.1.20/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
        "http://[2002:a00:1::]/",  # 6to4 around 10.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 around 169.254.169.254
    ],
)
async def test_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await check_callback_url(url, CallbackPolicy(), resolver=no_dns)
    assert info.value.code == "callback_url_forbidden"
    assert info.value.param == "callback_url"
    assert "allowlist" in info.value.message


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http:///no-host", "javascript:alert(1)", "http://h:99999/"]
)
async def test_non_http_or_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await check_callback_url(url, CallbackPolicy(allow_private=True), resolver=no_dns)
    assert info.value.code == "callback_url_forbidden"


async def test_public_address_passes() -> None:
    await check_callback_url("https://93.184.215.14/hook", CallbackPolicy(), resolver=no_dns)
    assert await resolve_and_check(
        "https://hooks.example.com/x", CallbackPolicy(), resolver=fixed_dns("93.184.215.14")
    ) == ["93.184.215.14"]


async def test_any_private_answer_refuses_the_host() -> None:
    with pytest.raises(InvalidRequestError, match="10.0.0.5, a private address"):
        await check_callback_url(
            "https://rebind.example.com/x?sig=abc", CallbackPolicy(),
            resolver=fixed_dns("93.184.215.14", "10.0.0.5"),
        )


async def test_allowlist_by_cidr_and_by_host() -> None:
    loopback = CallbackPolicy(allowlist=("127.0.0.0/8",))
    await check_callback_url("http://127.0.0.1:8000/hook", loopback, resolver=no_dns)
    await check_callback_url("http://127.9.9.9/hook", loopback, resolver=no_dns)
    with pytest.raises(InvalidRequestError):
        await check_callback_url("http://10.0.0.1/hook", loopback, resolver=no_dns)

    by_host = CallbackPolicy(allowlist=("localhost", "*.corp.example"))
    await check_callback_url("http://localhost:5678/webhook", by_host)  # real resolver, /etc/hosts
    await check_callback_url("http://n8n.corp.example/w", by_host, resolver=fixed_dns("10.1.2.3"))
    with pytest.raises(InvalidRequestError):
        await check_callback_url("http://corp.example.evil/w", by_host, resolver=fixed_dns("10.1.2.3"))

    await check_callback_url("http://10.0.0.1/", CallbackPolicy(allow_private=True), resolver=no_dns)


async def test_unresolvable_host() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(InvalidRequestError) as info:
        await check_callback_url("https://nowhere.example/x", CallbackPolicy(), resolver=nxdomain)
    assert info.value.code == "callback_url_unresolvable"


async def test_messages_never_carry_path_or_query() -> None:
    url = "http://127.0.0.1:5678/webhook-waiting/123?signature=s3cret"
    with pytest.raises(InvalidRequestError) as info:
        await check_callback_url(url, CallbackPolicy(), resolver=no_dns)
    assert "s3cret" not in info.value.message and "webhook-waiting" not in info.value.message
    assert redact_url(url) == "http://127.0.0.1:5678/..."
    assert redact_url("https://user:pw@[::1]/a?b=c") == "https://[::1]/..."


def test_check_ip() -> None:
    check_ip("8.8.8.8", CallbackPolicy())
    check_ip("10.0.0.1", CallbackPolicy(allowlist=("10.0.0.0/8",)))
    with pytest.raises(InvalidRequestError, match="link-local"):
        check_ip("169.254.169.254", CallbackPolicy())

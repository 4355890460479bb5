"""Digest authentication: RFC example vectors, server challenge/verify, client answers, hostile input."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtc2sip.sip import (
    Challenge,
    Credentials,
    DigestError,
    DigestServer,
    Outcome,
    SipParseError,
    answer_challenge,
    check_response,
    compute_ha1,
    compute_response,
    find_credentials,
    parse_challenge,
    parse_credentials,
    select_challenge,
    userhash,
)

# RFC 7616 §3.9.1
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_CHALLENGE = (
    'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n algorithm=SHA-256,\r\n'
    f' nonce="{RFC7616_NONCE}",\r\n opaque="{RFC7616_OPAQUE}"'
)
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

# RFC 2617 §3.5 (note the capital O of "Of", unlike RFC 7616)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def counter_random(n: int) -> bytes:
    """Deterministic 'randomness' so nonces differ yet tests are repeatable."""
    return next(_counter).to_bytes(n, "big")


_counter = itertools.count(1)

USERS = {"alice": "wonderland", "Mufasa": "Circle of Life"}


def password_lookup(username: str, realm: str, algorithm: str) -> str | None:
    return USERS.get(username)


def make_server(**kw: object) -> DigestServer:
    return DigestServer("example.com", b"k" * 32, random=counter_random, **kw)  # type: ignore[arg-type]


# -- RFC vectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)])
def test_rfc7616_example_response(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", RFC7616_REALM, "Circle of Life")
    got = compute_response(
        algorithm, ha1, RFC7616_NONCE, "GET", "/dir/index.html", qop="auth", nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert got == expected


@pytest.mark.parametrize(("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)])
def test_rfc7616_example_answer_challenge(algorithm: str, expected: str) -> None:
    challenge = RFC7616_CHALLENGE.replace("SHA-256", algorithm)
    value = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", password="Circle of Life", cnonce=RFC7616_CNONCE
    )
    cred = parse_credentials(value)
    assert cred.response == expected
    assert cred.algorithm == algorithm
    assert (cred.qop, cred.nc, cred.cnonce) == ("auth", "00000001", RFC7616_CNONCE)
    assert cred.opaque == RFC7616_OPAQUE
    assert f'response="{expected}"' in value


def test_rfc7616_example_with_ha1_as_a_browser_gives_it() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", RFC7616_REALM, "Circle of Life")
    value = answer_challenge(
        RFC7616_CHALLENGE.replace("SHA-256", "MD5"), "GET", "/dir/index.html", "Mufasa", ha1=ha1.upper(),
        cnonce=RFC7616_CNONCE,
    )
    assert parse_credentials(value).response == RFC7616_MD5


def test_rfc7616_userhash_example_with_errata_4897() -> None:
    # §3.9.2 as corrected by erratum 4897 (the RFC's own numbers came from a draft SHA-512/256).
    user = "J\u00e4s\u00f8n Doe"
    hashed = "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    assert userhash("SHA-512-256", user, "api@example.org") == hashed
    challenge = (
        'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
        'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
    )
    value = answer_challenge(
        challenge, "GET", "/doe.json", user, password="Secret, or not?",
        cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
    )
    cred = parse_credentials(value)
    assert cred.username == hashed and cred.userhash
    assert cred.response == "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"


def test_rfc7616_username_star() -> None:
    cred = parse_credentials(
        "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"api@example.org\", uri=\"/doe.json\", "
        'nonce="n", response="00", algorithm=SHA-256'
    )
    assert cred.username == "J\u00e4s\u00f8n Doe"


def test_rfc2617_example() -> None:
    cred = parse_credentials(RFC2617_AUTHORIZATION)
    assert cred.algorithm == "MD5"
    assert check_response(cred, "GET", password="Circle Of Life")
    assert not check_response(cred, "GET", password="Circle of Life")
    assert not check_response(cred, "POST", password="Circle Of Life")


def test_rfc2617_example_through_server_is_stale_not_rejected() -> None:
    # The response is right but the nonce is not one of ours: the client knows the password, so it is
    # told to retry with a fresh nonce rather than to ask its user again.
    server = DigestServer("testrealm@host.com", b"secret", algorithms=["MD5"])
    v = server.verify(RFC2617_AUTHORIZATION, "GET", 1000.0, lambda u, r, a: "Circle Of Life")
    assert v.outcome is Outcome.STALE and v.reason == "foreign nonce" and v.username == "Mufasa"
    v = server.verify(RFC2617_AUTHORIZATION, "GET", 1000.0, lambda u, r, a: "wrong")
    assert v.outcome is Outcome.REJECTED


def test_rfc2069_response() -> None:
    # RFC 2069 §2.4 example, password "CircleOfLife". The RFC prints e966c932…, which no implementation
    # reproduces; 1949323746… is the value digest libraries agree on for these inputs.
    cred = parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="/dir/index.html", response="1949323746fe6a43ef61f9606e7febea", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert cred.qop is None and cred.nc is None
    assert check_response(cred, "GET", password="CircleOfLife")


# -- challenges -------------------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    server = make_server()
    values = server.challenge(1000.0)
    assert len(values) == 2
    first, second = (parse_challenge(v) for v in values)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.qop == ("auth",) and first.realm == "example.com" and first.opaque
    assert not first.stale and not first.userhash
    assert values[0].startswith('Digest realm="example.com"')
    assert 'qop="auth"' in values[0] and "algorithm=SHA-256" in values[0]


def test_challenge_stale_flag_and_fresh_nonces() -> None:
    server = make_server()
    a = parse_challenge(server.challenge(1000.0)[0])
    b = parse_challenge(server.challenge(1000.0, stale=True)[0])
    assert b.stale and "stale=true" in str(b)
    assert a.nonce != b.nonce


def test_challenge_roundtrip() -> None:
    c = Challenge("r\"x", "n,1", "SHA-256-sess", ("auth", "auth-int"), "o", True, True, "sip:a sip:b")
    assert parse_challenge(str(c)) == c


# -- server verification ----------------------------------------------------------------------------


def register(server: DigestServer, now: float, *, index: int = 0, nc: int = 1, user: str = "alice",
             password: str = "wonderland", uri: str = "sip:example.com", challenge: str | None = None) -> str:
    value = challenge if challenge is not None else server.challenge(now)[index]
    return answer_challenge(value, "REGISTER", uri, user, password=password, nc=nc, cnonce=f"c{nc}")


@pytest.mark.parametrize("index", [0, 1])
def test_verify_accepts_each_offered_algorithm(index: int) -> None:
    server = make_server()
    v = server.verify(register(server, 1000.0, index=index), "REGISTER", 1001.0, password_lookup)
    assert v.accepted, v
    assert v.username == "alice"
    assert v.algorithm == ("SHA-256", "MD5")[index]


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
def test_verify_every_algorithm_with_ha1_lookup(algorithm: str) -> None:
    server = make_server(algorithms=[algorithm], lookup_gives="ha1")
    seen: list[tuple[str, str, str]] = []

    def ha1_lookup(username: str, realm: str, alg: str) -> str | None:
        seen.append((username, realm, alg))
        return compute_ha1(alg, username, realm, "wonderland")

    assert parse_challenge(server.challenge(0.0)[0]).algorithm == algorithm
    v = server.verify(register(server, 0.0), "REGISTER", 1.0, ha1_lookup)
    assert v.accepted, v
    # -sess users are stored under their base algorithm's HA1
    assert seen == [("alice", "example.com", algorithm.removesuffix("-sess"))]


def test_verify_accepts_sess_twin_of_offered_algorithm() -> None:
    server = make_server()
    c = parse_challenge(server.challenge(0.0)[0])
    value = answer_challenge(Challenge(c.realm, c.nonce, "SHA-256-sess", ("auth",)), "REGISTER",
                             "sip:example.com", "alice", password="wonderland")
    assert server.verify(value, "REGISTER", 1.0, password_lookup).accepted


def test_verify_rejects_algorithm_not_offered() -> None:
    server = make_server(algorithms=["SHA-256"])
    c = parse_challenge(server.challenge(0.0)[0])
    value = answer_challenge(Challenge(c.realm, c.nonce, "MD5", ("auth",)), "REGISTER", "sip:example.com",
                             "alice", password="wonderland")
    v = server.verify(value, "REGISTER", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "algorithm"


def test_verify_rfc2069_md5_without_qop() -> None:
    server = make_server(algorithms=["MD5"])
    c = parse_challenge(server.challenge(0.0)[0])
    legacy = Challenge(c.realm, c.nonce, "MD5")
    value = answer_challenge(legacy, "REGISTER", "sip:example.com", "alice", password="wonderland")
    assert "qop" not in value and "nc=" not in value and "cnonce" not in value
    assert server.verify(value, "REGISTER", 1.0, password_lookup).accepted
    # no nonce count to track: the same value is good until the nonce expires
    assert server.verify(value, "REGISTER", 2.0, password_lookup).accepted
    assert server.verify(value, "REGISTER", 1000.0, password_lookup).stale
    strict = make_server(algorithms=["MD5"], allow_rfc2069=False)
    v = strict.verify(value.replace(c.nonce, strict.make_nonce(0.0)), "REGISTER", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "qop"


def test_verify_no_rfc2069_for_sha256() -> None:
    server = make_server()
    c = parse_challenge(server.challenge(0.0)[0])
    value = answer_challenge(Challenge(c.realm, c.nonce, "SHA-256"), "REGISTER", "sip:example.com", "alice",
                             password="wonderland")
    assert server.verify(value, "REGISTER", 1.0, password_lookup).reason == "qop"


def test_wrong_password_unknown_user_wrong_method() -> None:
    server = make_server()
    v = server.verify(register(server, 0.0, password="nope"), "REGISTER", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "response"
    v = server.verify(register(server, 0.0, user="mallory"), "REGISTER", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "unknown user"
    v = server.verify(register(server, 0.0), "INVITE", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "response"


def test_wrong_realm_is_rejected_before_lookup() -> None:
    server = make_server()
    other = DigestServer("other.org", b"k" * 32)
    value = register(other, 0.0)

    def lookup(u: str, r: str, a: str) -> str | None:
        raise AssertionError("lookup must not be called")

    assert server.verify(value, "REGISTER", 1.0, lookup).reason == "realm"


def test_request_uri_must_match() -> None:
    server = make_server()
    value = register(server, 0.0, uri="sip:Example.COM")
    assert server.verify(value, "REGISTER", 1.0, password_lookup, request_uri="sip:example.com").accepted
    v = server.verify(value, "REGISTER", 1.0, password_lookup, request_uri="sip:other.com")
    assert v.reason == "uri"


def test_bad_ha1_from_lookup_is_a_rejection_not_a_crash() -> None:
    server = make_server(lookup_gives="ha1")
    v = server.verify(register(server, 0.0), "REGISTER", 1.0, lambda u, r, a: "not-hex")
    assert v.outcome is Outcome.REJECTED


# -- expiry and stale -------------------------------------------------------------------------------


def test_expired_nonce_with_right_password_is_stale() -> None:
    server = make_server(nonce_lifetime=30.0)
    value = register(server, 1000.0)
    assert server.verify(value, "REGISTER", 1029.0, password_lookup).accepted
    value = register(server, 1000.0, nc=2)
    v = server.verify(value, "REGISTER", 1031.0, password_lookup)
    assert v.outcome is Outcome.STALE and v.reason == "expired nonce"


def test_expired_nonce_with_wrong_password_is_rejected() -> None:
    server = make_server(nonce_lifetime=30.0)
    v = server.verify(register(server, 1000.0, password="x"), "REGISTER", 2000.0, password_lookup)
    assert v.outcome is Outcome.REJECTED


def test_nonce_from_the_future_is_stale() -> None:
    server = make_server()
    v = server.verify(register(server, 1000.0), "REGISTER", 900.0, password_lookup)
    assert v.stale


def test_nonce_from_another_secret_or_realm_is_stale() -> None:
    mine = make_server()
    restarted = DigestServer("example.com", b"another secret")
    assert mine.verify(register(restarted, 0.0), "REGISTER", 1.0, password_lookup).reason == "foreign nonce"
    # same secret, other realm: the realm is inside the MAC
    c = parse_challenge(DigestServer("other.org", b"k" * 32).challenge(0.0)[0])
    forged = Challenge("example.com", c.nonce, c.algorithm, c.qop)
    v = mine.verify(register(mine, 0.0, challenge=str(forged)), "REGISTER", 1.0, password_lookup)
    assert v.reason == "foreign nonce"


@pytest.mark.parametrize("nonce", ["", "!!!", "A" * 43, "A" * 500, "a" * 42 + "="])
def test_garbage_nonce_is_stale_not_crash(nonce: str) -> None:
    server = make_server()
    value = register(server, 0.0, challenge=str(Challenge("example.com", nonce or "x", "SHA-256", ("auth",))))
    assert server.verify(value, "REGISTER", 1.0, password_lookup).stale


# -- replay -----------------------------------------------------------------------------------------


def test_nonce_count_replay_is_detected() -> None:
    server = make_server()
    challenge = server.challenge(0.0)[0]
    first = register(server, 0.0, challenge=challenge, nc=1)
    assert server.verify(first, "REGISTER", 1.0, password_lookup).accepted
    v = server.verify(first, "REGISTER", 2.0, password_lookup)
    assert v.outcome is Outcome.STALE and v.reason == "replayed nonce count"
    assert server.verify(register(server, 0.0, challenge=challenge, nc=2), "REGISTER", 3.0,
                         password_lookup).accepted


def test_reordered_counts_within_window_are_accepted_once() -> None:
    server = make_server()
    challenge = server.challenge(0.0)[0]
    values = {nc: register(server, 0.0, challenge=challenge, nc=nc) for nc in (1, 2, 3, 5, 60, 100)}
    for nc in (3, 1, 2):
        assert server.verify(values[nc], "REGISTER", 1.0, password_lookup).accepted, nc
    assert server.verify(values[2], "REGISTER", 1.0, password_lookup).stale
    assert server.verify(values[60], "REGISTER", 1.0, password_lookup).accepted
    # 55 below the highest count: still inside the window
    assert server.verify(values[5], "REGISTER", 1.0, password_lookup).accepted
    assert server.verify(values[100], "REGISTER", 1.0, password_lookup).accepted
    # now 5 is too far below the highest count to be told apart from a replay
    assert server.verify(values[5], "REGISTER", 1.0, password_lookup).stale


def test_counts_are_per_user() -> None:
    server = make_server()
    challenge = server.challenge(0.0)[0]
    alice = register(server, 0.0, challenge=challenge)
    assert server.verify(alice, "REGISTER", 1.0, password_lookup).accepted
    bob = register(server, 0.0, challenge=challenge, user="Mufasa", password="Circle of Life")
    assert server.verify(bob, "REGISTER", 1.0, password_lookup).accepted


def test_replay_table_is_bounded_and_evicted_nonces_become_stale() -> None:
    server = make_server(max_nonces=3)
    issued = [server.challenge(float(t))[0] for t in range(5)]
    for t, challenge in enumerate(issued):
        assert server.verify(register(server, t, challenge=challenge), "REGISTER", 10.0,
                             password_lookup).accepted
    assert len(server._counts) <= 3
    # the first nonces' windows were evicted: a replay could not be told from new use, so stale
    v = server.verify(register(server, 0.0, challenge=issued[0], nc=2), "REGISTER", 11.0, password_lookup)
    assert v.reason == "forgotten nonce"
    # the newest ones are still tracked
    assert server.verify(register(server, 4.0, challenge=issued[4], nc=2), "REGISTER", 11.0,
                         password_lookup).accepted


def test_expired_windows_are_pruned() -> None:
    server = make_server(nonce_lifetime=10.0)
    for t in range(5):
        server.verify(register(server, float(t)), "REGISTER", float(t), password_lookup)
    server.verify(register(server, 100.0), "REGISTER", 100.0, password_lookup)
    assert len(server._counts) == 1


# -- userhash ---------------------------------------------------------------------------------------


def test_userhash_roundtrip() -> None:
    table = {userhash(a, u, "example.com"): u for u in USERS for a in ("MD5", "SHA-256")}
    server = make_server(resolve_userhash=lambda h, realm, alg: table.get(h))
    challenge = server.challenge(0.0)[0]
    assert parse_challenge(challenge).userhash
    value = register(server, 0.0, challenge=challenge)
    cred = parse_credentials(value)
    assert cred.userhash and cred.username == userhash("SHA-256", "alice", "example.com")
    v = server.verify(value, "REGISTER", 1.0, password_lookup)
    assert v.accepted and v.username == "alice"


def test_userhash_without_resolver_is_rejected() -> None:
    server = make_server()
    c = parse_challenge(server.challenge(0.0)[0])
    hidden = Challenge(c.realm, c.nonce, c.algorithm, c.qop, userhash=True)
    v = server.verify(register(server, 0.0, challenge=str(hidden)), "REGISTER", 1.0, password_lookup)
    assert v.outcome is Outcome.REJECTED and v.reason == "unknown user"


# -- client side ------------------------------------------------------------------------------------


def test_select_challenge_follows_header_order_and_restrictions() -> None:
    values = [
        "Basic realm=x",
        'Digest realm="a", nonce="1", algorithm=SHA3-512, qop="auth"',
        "Digest garbage",
        'Digest realm="a", nonce="2", algorithm=SHA-256, qop="auth"',
        'Digest realm="a", nonce="3", algorithm=MD5, qop="auth"',
    ]
    c = select_challenge(values)
    assert c is not None and c.nonce == "2"
    c = select_challenge(values, algorithms=["MD5"])
    assert c is not None and c.nonce == "3"
    assert select_challenge(values[:3]) is None


def test_answer_defaults_and_qop_choice() -> None:
    value = answer_challenge('Digest realm="r", nonce="n", qop="auth-int"', "INVITE", "sip:b@r", "u",
                             password="p", body=b"v=0\r\n", random=lambda n: b"\x01" * n)
    cred = parse_credentials(value)
    assert cred.qop == "auth-int" and cred.cnonce == "01" * 16 and cred.nc == "00000001"
    ha1 = compute_ha1("MD5", "u", "r", "p")
    assert cred.response == compute_response("MD5", ha1, "n", "INVITE", "sip:b@r", qop="auth-int",
                                             nc="00000001", cnonce=cred.cnonce, body=b"v=0\r\n")
    assert parse_credentials(answer_challenge('Digest realm="r", nonce="n", qop="auth,auth-int"', "A", "u",
                                              "u", password="p", nc=0x1234)).nc == "00001234"


def test_answer_errors() -> None:
    with pytest.raises(DigestError):
        answer_challenge('Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "A", "u", "u", password="p")
    with pytest.raises(DigestError):
        answer_challenge('Digest realm="r", nonce="n", qop="auth-conf"', "A", "u", "u", password="p")
    with pytest.raises(DigestError):  # an MD5 HA1 cannot answer a SHA-256 challenge
        answer_challenge('Digest realm="r", nonce="n", algorithm=SHA-256', "A", "u", "u", ha1="0" * 32)
    with pytest.raises(ValueError):
        answer_challenge('Digest realm="r", nonce="n"', "A", "u", "u")
    with pytest.raises(ValueError):
        answer_challenge('Digest realm="r", nonce="n"', "A", "u", "u", password="p", ha1="0" * 32)


def test_answer_refuses_header_injection() -> None:
    with pytest.raises(DigestError):
        answer_challenge('Digest realm="r", nonce="n"', "A", "u", "u\r\nVia: x", password="p")


# -- parsing ----------------------------------------------------------------------------------------


def test_parse_is_robust_to_spelling() -> None:
    cred = parse_credentials(
        'digest  USERNAME = "a\\"b\\\\c" ,, Realm="x, y",NONCE=abc/+=, uri="sip:x;transport=tcp",'
        ' response="ABCDEF", Algorithm="sha-256", QOP="AUTH", Nc=0000000A, CNonce="c", Userhash=TRUE ,'
    )
    assert cred == Credentials(
        username='a"b\\c', realm="x, y", nonce="abc/+=", uri="sip:x;transport=tcp", response="abcdef",
        algorithm="SHA-256", cnonce="c", nc="0000000A", qop="auth", opaque=None, userhash=True,
    )
    assert cred.nonce_count == 10
    assert parse_credentials(str(cred)) == cred


def test_find_credentials_picks_our_realm() -> None:
    other = RFC2617_AUTHORIZATION.replace("testrealm@host.com", "other")
    values = ["Basic Zm9v", other, RFC2617_AUTHORIZATION]
    found = find_credentials(values, "testrealm@host.com")
    assert found is not None and found.realm == "testrealm@host.com"
    assert find_credentials(values[:2], "testrealm@host.com") is None


MALFORMED = [
    "",
    "Digest",
    '"Digest" username="a"',
    "Digest username",
    'Digest username="a',
    'Digest username="a\\',
    'Digest username="a" realm="b"',
    "Digest username=, realm=x",
    'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="00"',
    'Digest realm="r", nonce="n", uri="u", response="00"',
    'Digest username="a", nonce="n", uri="u", response="00"',
    'Digest username="a", realm="r", uri="u", response="00"',
    'Digest username="a", realm="r", nonce="n", response="00"',
    'Digest username="a", realm="r", nonce="n", uri="u"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="xyz"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth, nc=1, cnonce="c"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth, nc=00000000, cnonce=c',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", nc=0000000g',
    "Digest username*=UTF-8''%FF, realm=r, nonce=n, uri=u, response=00",
    "Digest username*=KOI8-R''x, realm=r, nonce=n, uri=u, response=00",
    "Digest username=a, username*=UTF-8''a, realm=r, nonce=n, uri=u, response=00",
    'Digest username="a\x00", realm=r, nonce=n, uri=u, response=00',
    'Basic username="a", realm="r", nonce="n", uri="u", response="00"',
    "Digest " + "a=b, " * 3000,
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_credentials_raise_typed_error(value: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_credentials(value)
    assert isinstance(info.value, SipParseError) and info.value.status == 400
    server = make_server()
    with pytest.raises(DigestError):
        server.verify(value, "REGISTER", 0.0, password_lookup)


@pytest.mark.parametrize(
    "value", ["Digest nonce=n", 'Digest realm="r"', "Basic realm=r", "Digest realm=r nonce=n"]
)
def test_malformed_challenges(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)


_PIECES = st.sampled_from(
    ['Digest ', 'username', 'realm', 'nonce', 'uri', 'response', 'qop', 'nc', 'cnonce', 'algorithm',
     'userhash', '=', '"', '\\', ',', ' ', 'auth', '00000001', 'MD5', 'SHA-256-sess', 'true', 'abc', "*",
     "UTF-8''%41", '\r\n', '\t', '\x00', 'é']
)


@given(st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=200))
def test_parsers_only_raise_digest_error(value: str) -> None:
    server = DigestServer("r", b"s")
    with contextlib.suppress(DigestError):
        parse_credentials(value)
    with contextlib.suppress(DigestError):
        parse_challenge(value)
    with contextlib.suppress(DigestError):
        server.verify(value, "REGISTER", 0.0, password_lookup)

"""The agent's configuration: parsing, bundle epochs, the cache and erasure of dropped secrets."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import pytest

from runas.agent.config import ConfigStore, Secrets, StaleConfiguration, parse_config
from runas.agent.identity import CONFIG_CACHE, AgentIdentity, load_identity
from runas.crypto.sealing import AgentKeyPair, manifest_of
from runas.errors import DecryptionError, InvalidInput
from support.agent_documents import account, document, workflow

PASSWORD = "Pa55-word-that-is-secret"
OTHER = "another-secret-value-42"


@pytest.fixture
def identity(tmp_path: Path) -> AgentIdentity:
    return load_identity(tmp_path / "agent", "a")


def doc(identity: AgentIdentity, **kwargs: object) -> dict[str, object]:
    return document(identity.keys.public_bytes(), **kwargs)  # type: ignore[arg-type]


def test_parse_typed_entries(identity: AgentIdentity) -> None:
    raw = doc(
        identity,
        epoch=42,
        workflows=[
            workflow("W.A", "X:1", account=account(), properties={"port": 1433}),
            workflow("W.B", "X:1", runs=False, probe_type="script"),
        ],
        secrets={(3, 2): PASSWORD},
    )
    config = parse_config(raw, agent_id="a", etag='"42.0"')
    assert config.epoch == 42
    assert config.etag == '"42.0"'
    first, second = config.workflows
    assert first.key == ("W.A", "X:1")
    assert first.account is not None
    assert (first.account.id, first.account.secret_version) == (3, 2)
    assert first.account.public == {"user": "svc-sql"}
    assert first.properties == {"port": 1433}
    assert first.schedule.interval_s == 60
    assert first.probe.config["program"] == "/bin/true"
    assert not second.runs
    assert second.account is None
    assert PASSWORD not in repr(config)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"agent": "b"}, "another agent"),
        ({"epoch": -1}, "epoch"),
        ({"bundle": "not base64!"}, "base64"),
        ({"workflows": {}}, "workflows must be a list"),
        ({"workflows": [workflow(interval_s=0)]}, "interval_s must be positive"),
        ({"workflows": [workflow(), workflow()]}, "twice"),
        ({"workflows": [{**workflow(), "runs": "yes"}]}, "runs"),
        ({"workflows": [{**workflow(), "account": {"id": 1}}]}, r"account\.secret_version"),
    ],
)
def test_malformed_documents(
    identity: AgentIdentity, change: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_config({**doc(identity), **change}, agent_id="a")


def test_accept_opens_the_bundle_and_caches_it_sealed(identity: AgentIdentity) -> None:
    store = ConfigStore(identity)
    store.accept(
        doc(identity, epoch=5, workflows=[workflow(account=account())], secrets={(3, 2): PASSWORD})
    )
    entry = store.secrets.get(3, 2)
    assert entry is not None
    assert entry.fields["password"] == PASSWORD
    assert PASSWORD not in repr(store.secrets) + str(store.secrets) + repr(store)
    assert store.secrets.scrubber().scrub(f"x{PASSWORD}x")[1] == 1
    with pytest.raises(TypeError):
        pickle.dumps(store.secrets)

    cache = identity.data_dir / CONFIG_CACHE
    assert cache.stat().st_mode & 0o777 == 0o600
    # Only the sealed bundle is on disk: no file of the data directory holds the secret.
    for path in identity.data_dir.iterdir():
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert identity.state["config_epoch"] == 5
    assert identity.state["bundle_epoch"] == 5


def test_lower_epochs_are_refused_before_decrypting(identity: AgentIdentity) -> None:
    store = ConfigStore(identity)
    store.accept(doc(identity, epoch=5, secrets={(3, 2): PASSWORD}))
    store.accept(doc(identity, epoch=5, secrets={(3, 2): PASSWORD}))  # the same epoch is fine
    with pytest.raises(StaleConfiguration, match="configuration epoch 4"):
        store.accept(doc(identity, epoch=4))
    with pytest.raises(StaleConfiguration, match="bundle epoch 3"):
        store.accept(doc(identity, epoch=6, bundle_epoch=3))
    # A bundle with an older epoch but garbage inside is refused by its manifest alone.
    stale = doc(identity, epoch=4)
    assert manifest_of(base64.b64decode(str(stale["bundle"]))).epoch == 4
    assert store.config is not None
    assert store.config.epoch == 5
    assert store.secrets.get(3, 2) is not None  # still the held configuration


def test_a_bundle_for_another_key_is_refused(identity: AgentIdentity) -> None:
    store = ConfigStore(identity)
    other = AgentKeyPair.generate()
    with pytest.raises(DecryptionError):
        store.accept(document(other.public_bytes(), agent="a", epoch=1))
    assert store.config is None


def test_a_restarted_agent_resumes_from_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    identity = load_identity(data, "a")
    ConfigStore(identity).accept(
        doc(identity, epoch=7, workflows=[workflow(account=account())], secrets={(3, 2): PASSWORD})
    )
    # kill -9: nothing was shut down; a new process loads everything from disk.
    store = ConfigStore(load_identity(data, "a"))
    config = store.load_cached()
    assert config is not None
    assert config.epoch == 7
    assert config.etag == '"7.0"'
    assert store.secrets.get(3, 2) is not None


def test_an_unusable_cache_is_erased(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    identity = load_identity(data, "a")
    (data / CONFIG_CACHE).write_bytes(b"{broken")
    os.chmod(data / CONFIG_CACHE, 0o600)
    assert ConfigStore(identity).load_cached() is None
    assert not (data / CONFIG_CACHE).exists()


def test_a_dropped_account_is_gone_from_memory_and_cache(identity: AgentIdentity) -> None:
    store = ConfigStore(identity)
    store.accept(doc(identity, epoch=1, secrets={(3, 2): PASSWORD, (4, 1): OTHER}))
    before = store.secrets
    store.accept(doc(identity, epoch=2, secrets={(4, 1): OTHER}))
    assert store.secrets.get(3, 2) is None
    assert before.get(3, 2) is None  # the old holder was cleared, not only replaced
    assert len(before) == 0
    cached = json.loads((identity.data_dir / CONFIG_CACHE).read_bytes())
    manifest = manifest_of(base64.b64decode(cached["document"]["bundle"]))
    assert manifest.entries == ((4, 1),)
    assert store.secrets.scrubber().scrub(PASSWORD)[1] == 0


def test_erase_forgets_everything_but_keeps_the_epochs(identity: AgentIdentity) -> None:
    store = ConfigStore(identity)
    store.accept(doc(identity, epoch=3, secrets={(3, 2): PASSWORD}))
    store.erase()
    assert store.config is None
    assert len(store.secrets) == 0
    assert not identity.cache_file.exists()
    assert store.load_cached() is None
    with pytest.raises(StaleConfiguration):
        store.accept(doc(identity, epoch=2))


def test_secrets_repr_hides_values() -> None:
    assert repr(Secrets()) == "Secrets(epoch=0, accounts=0, values=<hidden>)"

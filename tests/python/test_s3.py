"""The S3 cache tier end to end, against a real S3-compatible server that checks credentials
(moto, a subprocess on 127.0.0.1). What the tier does with wrong-sized, corrupt or absent
objects, outages, denials, conditional creates raced by many machines and files with absent
chunks is tested in Rust over an in-memory store that injects faults (tests/s3_tier.rs,
tests/tiered.rs); this test checks that the real client, the real server and the whole
stack agree."""

import configparser
import os

from conftest import chunk_gets, DATA, FORMAT_DIR, Runner, free_port

TEST_SET = DATA / "test-set.jsonl"


def test_the_s3_tier_end_to_end(http_source, s3, mount_factory, tmp_path):
    """Profiles from a credentials file (a wrong secret is refused, naming the profile and
    never the secret); mount A builds a file and uploads it; `list` of another cache sees it
    in S3; mount B, another process with another cache, serves it from S3 without a source
    request, byte for byte; when the server goes away, B's reads go on from the source, the
    outage is logged once and its uploads wait."""
    creds = tmp_path / "credentials"
    cfg = configparser.ConfigParser()
    cfg["good"] = {"aws_access_key_id": s3.key_id, "aws_secret_access_key": s3.secret,
                   "region": "us-east-1"}
    cfg["bad"] = {"aws_access_key_id": s3.key_id, "aws_secret_access_key": "not-the-secret-42"}
    with open(creds, "w") as f:
        cfg.write(f)
    base = {"S3_BUCKET_NAME": s3.bucket, "S3_ENDPOINT_URL": s3.url, "S3_KEY_PREFIX": "team/era5",
            "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    good = {**base, "S3_PROFILE": "good"}

    run = Runner(http_source.url, tmp_path / "cache-list", tmp_path)
    p = run("list", "--deskriptors", TEST_SET, env={**base, "S3_PROFILE": "bad"}, check=False)
    assert p.returncode == 1 and 'access denied with profile "bad"' in p.stderr, p.stderr
    assert "not-the-secret-42" not in p.stderr and s3.secret not in p.stderr
    assert "panicked" not in p.stderr

    a = mount_factory(TEST_SET, http_source.url, cache=tmp_path / "cache-a", name="a", env=good)
    data_a = (a.mountpoint / "multi_hour.nc").read_bytes()
    identity = os.getxattr(a.mountpoint / "multi_hour.nc", "user.sodeda.identity").decode()
    assert s3.objects() == {f"team/era5/{FORMAT_DIR}/{identity}.nc": len(data_a)}
    assert a.stats()["uploads"] == 1
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"team/era5/{FORMAT_DIR}/{identity}.nc")
    assert "crc32c" in head["Metadata"], "objects carry their checksum"

    rows = {r["name"]: r for r in run.list(TEST_SET, env=good)}
    assert rows["multi_hour.nc"]["tiers"] == ["s3"], rows["multi_hour.nc"]
    assert all(r["tiers"] == [] for name, r in rows.items() if name != "multi_hour.nc")

    n = len(http_source.requests)
    b = mount_factory(TEST_SET, http_source.url, cache=tmp_path / "cache-b", name="b", env=good)
    assert (b.mountpoint / "multi_hour.nc").read_bytes() == data_a
    assert chunk_gets(http_source.requests[n:]) == []
    stats = b.stats()
    assert stats["remote_hits"] == 1 and stats["flow_runs"] == 0
    assert os.getxattr(b.mountpoint / "multi_hour.nc", "user.sodeda.cached") == b"yes"

    s3.stop()
    for name in ["steps.nc", "exact_lists.nc", "crossing_zero.nc"]:
        assert len((b.mountpoint / name).read_bytes()) == os.stat(b.mountpoint / name).st_size
    log = b.log.read_text()
    assert log.count("continuing with the local cache and the source") == 1, log
    assert s3.secret not in log, "credentials never appear in logs"
    stats = b.stats()
    assert stats["uploads_pending"] == 3 and stats["read_errors"] == 0


def test_without_the_bucket_at_startup_commands_still_work(replica, tmp_path):
    """No server at all at the endpoint: a warning, once, and the file is built."""
    env = {"S3_BUCKET_NAME": "b", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    run = Runner(replica, tmp_path / "c", tmp_path)
    p = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "x.nc", env=env)
    assert "built from the source" in p.stderr
    assert p.stderr.count("continuing with the local cache") == 1, p.stderr

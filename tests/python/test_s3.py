"""The S3 cache tier against a real S3-compatible server (moto) on 127.0.0.1."""

import configparser
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import chunk_gets, DATA, Runner, free_port, read_lines

TEST_SET = DATA / "test-set.jsonl"
LINES = read_lines(TEST_SET)


def test_a_file_built_by_one_mount_is_served_to_another_from_s3(
        http_source, s3, mount_factory, tmp_path):
    """Mount A (own local cache) builds a file; mount B (another process, another local cache)
    gets it from S3 without any source request, byte for byte."""
    a = mount_factory(TEST_SET, http_source.url, cache=tmp_path / "cache-a", name="a",
                      env=s3.env())
    data_a = (a.mountpoint / "multi_hour.nc").read_bytes()
    identity = os.getxattr(a.mountpoint / "multi_hour.nc", "user.sodeda.identity").decode()
    assert s3.objects() == {f"sodeda-era5/v2/{identity}.nc": len(data_a)}
    assert a.stats()["uploads"] == 1

    n = len(http_source.requests)
    b = mount_factory(TEST_SET, http_source.url, cache=tmp_path / "cache-b", name="b",
                      env=s3.env())
    data_b = (b.mountpoint / "multi_hour.nc").read_bytes()
    assert data_b == data_a
    assert chunk_gets(http_source.requests[n:]) == []
    stats = b.stats()
    assert stats["remote_hits"] == 1 and stats["flow_runs"] == 0
    assert os.getxattr(b.mountpoint / "multi_hour.nc", "user.sodeda.cached") == b"yes"


def test_get_and_list_report_tiers(replica, s3, tmp_path):
    env = s3.env(prefix="team/era5")
    one = Runner(replica, tmp_path / "c1", tmp_path)
    p = one("get", "--deskriptors", TEST_SET, "--line", 3, "-o", tmp_path / "x.nc", env=env)
    assert "built from the source" in p.stderr
    rows = one.list(TEST_SET, env=env)
    assert rows[2]["tiers"] == ["local", "s3"] and rows[3]["tiers"] == []
    assert all(k.startswith("team/era5/v2/") for k in s3.objects()), s3.objects()
    two = Runner(replica, tmp_path / "c2", tmp_path)
    rows = two.list(TEST_SET, env=env)
    assert rows[2]["tiers"] == ["s3"]
    p = two("get", "--deskriptors", TEST_SET, "--line", 3, "-o", tmp_path / "y.nc",
            "--stats", env=env)
    assert "copied from the S3 cache" in p.stderr
    assert "source: 0 requests, 0 bytes for data" in p.stderr
    assert (tmp_path / "x.nc").read_bytes() == (tmp_path / "y.nc").read_bytes()
    text = two("list", "--deskriptors", TEST_SET, env=env).stdout
    assert "local+s3" in text


def test_a_wrong_sized_object_is_rebuilt_and_replaced(replica, s3, tmp_path):
    env = s3.env()
    run = Runner(replica, tmp_path / "c1", tmp_path)
    run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "good.nc", env=env)
    (key, size), = s3.objects().items()
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"truncated")
    other = Runner(replica, tmp_path / "c2", tmp_path)
    p = other("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "again.nc",
              env=env)
    assert "built from the source" in p.stderr
    assert "rebuilding it" in p.stderr
    assert (tmp_path / "again.nc").read_bytes() == (tmp_path / "good.nc").read_bytes()
    assert s3.objects() == {key: size}


def test_an_unreachable_bucket_warns_once_and_reads_keep_working(
        replica, s3, mount_factory, tmp_path):
    """The S3 server stopped mid-run: reads keep working from the local cache and the
    source, the mount stays up, the warning is logged once, and uploads resume later."""
    m = mount_factory(TEST_SET, replica, env=s3.env())
    first = (m.mountpoint / "multi_hour.nc").read_bytes()
    assert m.stats()["uploads"] == 1
    s3.stop()
    for name in ["steps.nc", "exact_lists.nc", "crossing_zero.nc"]:
        assert len((m.mountpoint / name).read_bytes()) == os.stat(m.mountpoint / name).st_size
    assert (m.mountpoint / "multi_hour.nc").read_bytes() == first
    log = m.log.read_text()
    assert log.count("continuing with the local cache and the source") == 1, log
    assert s3.secret not in log, "credentials never appear in logs"
    stats = m.stats()
    assert stats["uploads_pending"] == 3 and stats["read_errors"] == 0


def test_without_the_bucket_at_startup_commands_still_work(replica, tmp_path):
    env = {"S3_BUCKET_NAME": "b", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    run = Runner(replica, tmp_path / "c", tmp_path)
    p = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "x.nc", env=env)
    assert "built from the source" in p.stderr
    assert p.stderr.count("continuing with the local cache") == 1, p.stderr


@pytest.fixture
def moto_with_auth(tmp_path):
    """A moto server (subprocess, stopped by PID) that checks credentials: one IAM user with
    an access key allowed everything, and a bucket."""
    import boto3
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="boot",
                  aws_secret_access_key="boot")
        iam = boto3.client("iam", **kw)
        for _ in range(100):
            try:
                iam.create_user(UserName="sodeda")
                break
            except Exception:
                time.sleep(0.1)
        key = iam.create_access_key(UserName="sodeda")["AccessKey"]
        iam.put_user_policy(UserName="sodeda", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket="auth")
        yield url, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_profile_credentials_work_and_wrong_ones_name_the_profile(replica, moto_with_auth,
                                                                 tmp_path):
    url, key_id, secret = moto_with_auth
    creds = tmp_path / "credentials"
    cfg = configparser.ConfigParser()
    cfg["good"] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret,
                   "region": "us-east-1"}
    cfg["bad"] = {"aws_access_key_id": key_id, "aws_secret_access_key": "not-the-secret-42"}
    with open(creds, "w") as f:
        cfg.write(f)
    base = {"S3_BUCKET_NAME": "auth", "S3_ENDPOINT_URL": url,
            "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    run = Runner(replica, tmp_path / "c", tmp_path)
    p = run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "x.nc",
            env={**base, "S3_PROFILE": "good"})
    assert "built from the source" in p.stderr and "warning" not in p.stderr, p.stderr
    rows = json.loads(run("list", "--json", "--deskriptors", TEST_SET,
                          env={**base, "S3_PROFILE": "good"}).stdout)
    assert rows[0]["tiers"] == ["local", "s3"]

    p = run("list", "--deskriptors", TEST_SET, env={**base, "S3_PROFILE": "bad"}, check=False)
    assert p.returncode == 1
    assert 'access denied with profile "bad"' in p.stderr, p.stderr
    assert "not-the-secret-42" not in p.stderr and secret not in p.stderr
    assert "panicked" not in p.stderr

    p = run("list", "--deskriptors", TEST_SET, env={**base, "S3_PROFILE": "nope"}, check=False)
    assert p.returncode == 1
    assert 'profile "nope" is not in the credentials file' in p.stderr, p.stderr


def test_a_corrupt_object_of_the_right_size_is_rebuilt_and_replaced(replica, s3, tmp_path):
    """Objects carry a CRC-32C in their metadata; a damaged object (same size, stored
    checksum) is not copied but rebuilt and replaced."""
    env = s3.env()
    run = Runner(replica, tmp_path / "c1", tmp_path)
    run("get", "--deskriptors", TEST_SET, "--line", 5, "-o", tmp_path / "good.nc", env=env)
    (key, size), = s3.objects().items()
    client = s3.client()
    head = client.head_object(Bucket=s3.bucket, Key=key)
    assert "crc32c" in head["Metadata"]
    body = bytearray(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body), Metadata=head["Metadata"])
    other = Runner(replica, tmp_path / "c2", tmp_path)
    p = other("get", "--deskriptors", TEST_SET, "--line", 5, "-o", tmp_path / "again.nc",
              env=env)
    assert "is corrupt" in p.stderr and "built from the source" in p.stderr, p.stderr
    good = (tmp_path / "good.nc").read_bytes()
    assert (tmp_path / "again.nc").read_bytes() == good
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == good


def test_a_file_with_absent_chunks_is_not_shared_through_s3(replica, s3, tmp_path):
    """Hours whose chunks the store has not written read as missing values; such a file is
    kept locally (marked) but never uploaded, by get or by preload: other machines would take
    it as final."""
    env = s3.env()
    run = Runner(replica, tmp_path / "c1", tmp_path)
    absent = json.dumps({"time": "2030-01-01T00:00", "latitude": 47, "longitude": 8,
                         "variable": "2m_temperature"})
    run("get", "--deskriptor", absent, "-o", tmp_path / "a.nc", env=env)
    assert s3.objects() == {}
    (entry,) = [p for p in (tmp_path / "c1").rglob("*.nc") if p.parent.name != "tmp"]
    # The count, and the store version it was built under (rebuilt once that changes).
    assert os.getxattr(entry, "user.sodeda.absent-chunks") == \
        b"1 2026-09-05 02:45:44.987382+00:00"
    lines = tmp_path / "d.jsonl"
    lines.write_text(absent + "\n")
    run("preload", "--deskriptors", lines, env=env)
    assert s3.objects() == {}
    run("get", "--deskriptors", TEST_SET, "--line", 1, "-o", tmp_path / "b.nc", env=env)
    assert len(s3.objects()) == 1

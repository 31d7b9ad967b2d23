"""Inputs from a bucket: a real S3 API on 127.0.0.1 (moto's server, started and stopped here),
read through fsspec and s3fs as a user's run reads AWS: a prefix, a glob, a tar shard in the
bucket, the masks equal to a local run's; a missing bucket, no credentials, a missing extra and
an output URL each one clear line."""

from __future__ import annotations

import io
import json
import socket
import tarfile

import pytest

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "-f", "coco-rle"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path):
    """Bucket `photos`: in/a/x.jpg, in/b.jpg, in/notes.txt and shards/00000.tar (two images);
    the same images under tmp_path/local for the local run."""
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    try:
        s3.create_bucket(Bucket="photos")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    a, b = (EXAMPLES / "chelsea.jpg").read_bytes(), (EXAMPLES / "coffee.jpg").read_bytes()
    s3.put_object(Bucket="photos", Key="in/a/x.jpg", Body=a)
    s3.put_object(Bucket="photos", Key="in/b.jpg", Body=b)
    s3.put_object(Bucket="photos", Key="in/notes.txt", Body=b"not an image")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("000000.jpg", a), ("000001.jpg", b)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="photos", Key="shards/00000.tar", Body=buf.getvalue())
    local = tmp_path / "local"
    (local / "a").mkdir(parents=True)
    (local / "a" / "x.jpg").write_bytes(a)
    (local / "b.jpg").write_bytes(b)
    return tmp_path


def test_a_prefix_in_a_bucket_gives_the_masks_of_the_local_files(bucket, tiny_ckpt):
    p = run_sam("auto", bucket / "local", "-o", bucket / "l", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    p = run_sam("auto", "s3://photos/in/", "-o", bucket / "r", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [(r["input"], r["status"]) for r in lines(p)] == [("s3://photos/in/a/x.jpg", "ok"),
                                                              ("s3://photos/in/b.jpg", "ok")]
    for key in ("a/x.jpg", "b.jpg"):
        got = json.loads((bucket / "r" / f"{key}.json").read_text())
        assert got["annotations"] == json.loads((bucket / "l" / f"{key}.json").read_text())["annotations"]
    # a glob under the prefix, keyed relative to its part before the wildcard
    p = run_sam("auto", "s3://photos/in/*.jpg", "-o", bucket / "g", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in lines(p)] == ["s3://photos/in/b.jpg"]
    assert (bucket / "g" / "b.jpg.json").is_file()


def test_a_tar_shard_in_a_bucket_is_read_a_member_at_a_time(bucket, tiny_ckpt):
    p = run_sam("auto", "s3://photos/shards/{00000..00000}.tar", "-o", bucket / "t", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in lines(p)] == ["s3://photos/shards/00000.tar/000000.jpg",
                                              "s3://photos/shards/00000.tar/000001.jpg"]
    assert (bucket / "t" / "00000.tar" / "000001.jpg.json").is_file()


def test_bucket_errors_are_one_clear_line(bucket, tiny_ckpt, monkeypatch):
    p = run_sam("auto", "s3://no-such-bucket/in/", "-o", bucket / "x", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 3, err  # the only input is missing
    assert "s3://no-such-bucket/in/: cannot" in err and "Traceback" not in err
    p = run_sam("auto", "s3://photos/in/", "-o", "s3://photos/out/", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 2 and "writing to a bucket URL is not supported yet" in p.stderr.decode()
    p = run_sam("auto", "ftp://host/x.jpg", "-o", bucket / "y", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 2 and "not ftp://" in p.stderr.decode()
    import sys

    import fsspec  # noqa: F401  (its registry module, which `fsspec.registry` the name hides)

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)  # nor loaded before
    p = run_sam("auto", "s3://photos/in/", "-o", bucket / "z", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 2 and "needs s3fs" in err and "segment-anything-cli[s3]" in err, err


def test_no_credentials_is_a_failed_listing_naming_the_url(bucket, tiny_ckpt, monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    p = run_sam("auto", "s3://photos/in/", "-o", bucket / "c", "-c", tiny_ckpt, *FAST)
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "s3://photos/in/: cannot list" in err and "credentials" in err.lower() and "Traceback" not in err
    assert "testing" not in err  # no secret is ever printed

"""The demo's S3-compatible server (moto's S3 backend alone, behind waitress) speaks what the product
uses, keeps connections open, and stops cleanly with clients still connected."""

from __future__ import annotations

import http.client
import socket
import urllib.request

import pytest

from include.demo.services import S3Server
from include.demo.world import s3_client_for


@pytest.fixture
def server():
    server = S3Server(0).start()
    yield server
    server.stop()


def test_objects_versions_presigned_links_and_multipart_copies(server):
    s3 = s3_client_for(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket="s3-server-test")
    s3.put_bucket_versioning(Bucket="s3-server-test", VersioningConfiguration={"Status": "Enabled"})
    key = "specs/q-1/Ünïcode bracket.step"
    s3.put_object(Bucket="s3-server-test", Key=key, Body=b"v1")
    s3.put_object(Bucket="s3-server-test", Key=key, Body=b"v2")
    assert len(s3.list_object_versions(Bucket="s3-server-test", Prefix="specs/")["Versions"]) == 2
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "s3-server-test", "Key": key}, ExpiresIn=60)
    with urllib.request.urlopen(url) as response:  # noqa: S310 - a local http URL we just signed
        assert response.read() == b"v2"
    upload = s3.create_multipart_upload(Bucket="s3-server-test", Key="copy")
    part = s3.upload_part_copy(
        Bucket="s3-server-test",
        Key="copy",
        UploadId=upload["UploadId"],
        PartNumber=1,
        CopySource={"Bucket": "s3-server-test", "Key": key},
    )
    s3.complete_multipart_upload(
        Bucket="s3-server-test",
        Key="copy",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["CopyPartResult"]["ETag"], "PartNumber": 1}]},
    )
    assert s3.get_object(Bucket="s3-server-test", Key="copy")["Body"].read() == b"v2"
    s3.delete_objects(Bucket="s3-server-test", Delete={"Objects": [{"Key": "copy"}], "Quiet": True})
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="s3-server-test").get("Contents", [])] == [key]


def test_stop_frees_the_port(server):
    port = server.port
    server.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if the listening socket were still open


def _get_twice_on_one_connection(port: int) -> list[int]:
    """Two requests; both must travel on the same socket (http.client would quietly open a second
    one after a server's ``Connection: close``, as werkzeug's development server sends)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses, sockets = [], []
    for _ in range(2):
        conn.request("GET", "/")
        sockets.append(conn.sock)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        assert not response.will_close
    assert sockets[0] is sockets[1]
    conn.close()
    return statuses


def test_one_connection_serves_many_requests(server):
    assert _get_twice_on_one_connection(server.port) == [200, 200]


def test_stop_with_a_client_still_connected(server):
    port = server.port
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.request("GET", "/")
    idle.getresponse().read()  # the connection stays open, idle, like a pooled botocore one
    server.stop()
    assert not server._thread.is_alive()
    assert idle.sock.recv(1) == b""  # the server closed the idle connection
    again = S3Server(port).start()  # a restarted demo listens on the same port at once
    try:
        assert _get_twice_on_one_connection(port) == [200, 200]
    finally:
        again.stop()
        idle.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body", [b"", b"x", "Ünïcode €".encode()], ids=["empty", "one-byte", "multi-byte"])
def test_puts_of_any_size_are_answered(server, body):
    """botocore sends ``Expect: 100-continue`` with every PutObject body, even an empty one:
    waitress answered "100 Continue" to the empty one and then waited for ever."""
    s3 = s3_client_for(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket="s3-server-bodies")
    s3.put_object(Bucket="s3-server-bodies", Key="k", Body=body)
    assert s3.get_object(Bucket="s3-server-bodies", Key="k")["Body"].read() == body


def test_an_empty_body_with_expect_continue_gets_its_answer_at_once(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PUT /s3-server-raw HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"  # not "HTTP/1.1 100 Continue" and a wait

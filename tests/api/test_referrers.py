"""Content discovery: listing referrers (end-12a, end-12b) and `subject` handling."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    canonical,
    descriptor,
    digest_of,
    parse_link,
    push_artifact,
    push_blob,
    push_image,
    push_manifest,
    repo_name,
)

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


def referrers(client: httpx.Client, name: str, digest: str, **params: Any) -> httpx.Response:
    return client.get(f"/v2/{name}/referrers/{digest}", params=params or None)


def listed(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, (response.status_code, response.text)
    return {d["digest"]: d for d in response.json()["manifests"]}


def test_referrers_response_is_an_image_index(client: httpx.Client) -> None:
    """'Upon success, the response MUST be a JSON body with an image index'; 'The Content-Type
    header MUST be set to application/vnd.oci.image.index.v1+json'."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    push_artifact(client, name, subject)
    r = referrers(client, name, subject[1])
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)


def test_referrer_descriptor_fields(client: httpx.Client) -> None:
    """Each descriptor: mediaType, digest, size of the referrer, its `artifactType`, and
    'The descriptors MUST include annotations from the image manifest or index'."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    annotations = {"org.opencontainers.image.created": "2022-01-01T14:42:55Z", "x": "y"}
    body, digest, _ = push_artifact(client, name, subject, SBOM, annotations=annotations)
    entries = listed(referrers(client, name, subject[1]))
    assert list(entries) == [digest]
    entry = entries[digest]
    assert entry["mediaType"] == OCI_MANIFEST
    assert entry["size"] == len(body)
    assert entry["artifactType"] == SBOM
    assert entry["annotations"] == annotations


def test_artifact_type_falls_back_to_config_media_type(client: httpx.Client) -> None:
    """'If the artifactType is empty or missing in the image manifest, the value of artifactType
    MUST be set to the config descriptor mediaType value.'"""
    name = repo_name()
    subject = push_image(client, name, "v1")
    _, digest, _ = push_artifact(
        client, name, subject, None, config_type="application/vnd.example.config.v1+json"
    )
    entry = listed(referrers(client, name, subject[1]))[digest]
    assert entry["artifactType"] == "application/vnd.example.config.v1+json"


def test_index_referrer_without_artifact_type_omits_it(client: httpx.Client) -> None:
    """'If the artifactType is empty or missing in an index, the artifactType MUST be omitted.'"""
    name = repo_name()
    subject = push_image(client, name, "v1")
    child = push_image(client, name)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, child[0])],
        "subject": descriptor(OCI_MANIFEST, subject[0]),
        "annotations": {"kind": "index"},
    }
    body = canonical(index)
    push_manifest(client, name, digest_of(body), body, OCI_INDEX)
    entry = listed(referrers(client, name, subject[1]))[digest_of(body)]
    assert entry["mediaType"] == OCI_INDEX
    assert "artifactType" not in entry
    assert entry["annotations"] == {"kind": "index"}
    assert entry["size"] == len(body)


def test_index_referrer_with_artifact_type(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [],
        "subject": descriptor(OCI_MANIFEST, subject[0]),
    }
    body = canonical(index)
    push_manifest(client, name, digest_of(body), body, OCI_INDEX)
    entry = listed(referrers(client, name, subject[1]))[digest_of(body)]
    assert entry["artifactType"] == "application/vnd.example.bundle"


def test_referrer_without_annotations(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    _, digest, _ = push_artifact(client, name, subject)
    entry = listed(referrers(client, name, subject[1]))[digest]
    assert entry.get("annotations", {}) == {}


def test_multiple_referrers_listed(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    digests = {push_artifact(client, name, subject, t)[1] for t in (SBOM, SIGNATURE, SBOM)}
    assert set(listed(referrers(client, name, subject[1]))) == digests


def test_only_referrers_of_that_subject(client: httpx.Client) -> None:
    """'Each descriptor is of an image manifest or index ... with a subject field that specifies
    the value of <digest>'."""
    name = repo_name()
    first, second = push_image(client, name, "a"), push_image(client, name, "b")
    _, mine, _ = push_artifact(client, name, first)
    push_artifact(client, name, second)
    push_artifact(client, name, None)
    assert list(listed(referrers(client, name, first[1]))) == [mine]


def test_referrers_are_scoped_to_the_repository(client: httpx.Client) -> None:
    """'Each descriptor is of an image manifest or index in the same <name> namespace'."""
    name, other = repo_name(), repo_name()
    subject = push_image(client, name, "v1")
    push_artifact(client, other, subject)
    assert listed(referrers(client, name, subject[1])) == {}


def test_referrer_pushed_before_subject(client: httpx.Client) -> None:
    """Push 'a manifest and referrers to that manifest in either order'."""
    name = repo_name()
    config, _ = push_blob(client, name, json.dumps({"order": "later"}).encode())
    subject_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [],
    }
    subject_body = canonical(subject_doc)
    subject_digest = digest_of(subject_body)
    _, referrer, r = push_artifact(client, name, (subject_body, subject_digest))
    assert r.headers["OCI-Subject"] == subject_digest
    assert list(listed(referrers(client, name, subject_digest))) == [referrer]
    push_manifest(client, name, "v1", subject_body)
    assert list(listed(referrers(client, name, subject_digest))) == [referrer]


def test_unknown_subject_returns_empty_list(client: httpx.Client) -> None:
    """'the registry MUST NOT return a 404 Not Found to a referrers API requests'; 'If a query
    results in no matching referrers, an empty manifest list MUST be returned'."""
    name = repo_name()
    push_image(client, name, "v1")
    r = referrers(client, name, digest_of(b"no such manifest"))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.json()["manifests"] == []


def test_unknown_repository_returns_empty_list(client: httpx.Client) -> None:
    r = referrers(client, repo_name(), digest_of(b"x"))
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_subject_without_referrers_returns_empty_list(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    r = referrers(client, name, subject[1])
    assert r.status_code == 200
    assert r.json()["manifests"] == []
    assert "Link" not in r.headers


@pytest.mark.parametrize("bad", ["sha256:abc", "nocolon", "md5:d41d8cd98f00b204e9800998ecf8427e"])
def test_malformed_digest_is_400(client: httpx.Client, bad: str) -> None:
    """'If the request is invalid, such as a <digest> with an invalid syntax, a 400 Bad Request
    MUST be returned.'"""
    name = repo_name()
    push_image(client, name, "v1")
    r = referrers(client, name, bad)
    assert r.status_code == 400, (r.status_code, r.text)
    assert_error(r, 400, "DIGEST_INVALID")


def test_referrers_by_tag_is_400(client: httpx.Client) -> None:
    """`<digest>` is 'the digest of the manifest specified in the subject field', not a tag."""
    name = repo_name()
    push_image(client, name, "v1")
    assert referrers(client, name, "v1").status_code == 400


def test_artifact_type_filter(client: httpx.Client) -> None:
    """'If filtering is requested and applied, the response MUST include a header
    OCI-Filters-Applied: artifactType'."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    _, sbom, _ = push_artifact(client, name, subject, SBOM)
    push_artifact(client, name, subject, SIGNATURE)
    r = referrers(client, name, subject[1], artifactType=SBOM)
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert list(listed(r)) == [sbom]


def test_artifact_type_filter_on_config_media_type(client: httpx.Client) -> None:
    """The filter applies to the descriptor's artifactType, including the config fallback."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    config_type = "application/vnd.example.cfg.v1+json"
    _, wanted, _ = push_artifact(client, name, subject, None, config_type=config_type)
    push_artifact(client, name, subject, SBOM)
    r = referrers(client, name, subject[1], artifactType=config_type)
    assert list(listed(r)) == [wanted]


def test_artifact_type_filter_without_matches(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    push_artifact(client, name, subject, SBOM)
    r = referrers(client, name, subject[1], artifactType="application/vnd.example.none")
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert r.json()["manifests"] == []


def test_no_filters_applied_header_without_filter(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    push_artifact(client, name, subject, SBOM)
    assert "OCI-Filters-Applied" not in referrers(client, name, subject[1]).headers


def test_deleted_referrer_disappears(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    _, keep, _ = push_artifact(client, name, subject, SBOM)
    _, gone, _ = push_artifact(client, name, subject, SIGNATURE)
    assert client.delete(f"/v2/{name}/manifests/{gone}").status_code == 202
    assert list(listed(referrers(client, name, subject[1]))) == [keep]


def test_referrers_survive_subject_deletion(client: httpx.Client) -> None:
    """Deleting the subject does not need to delete referrers; listing them still works."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    push_artifact(client, name, subject, SBOM)
    assert client.delete(f"/v2/{name}/manifests/{subject[1]}").status_code == 202
    assert referrers(client, name, subject[1]).status_code == 200


def test_referrers_pagination_with_link(client: httpx.Client) -> None:
    """'A Link header MUST be included in the response when the descriptor list cannot be
    returned in a single manifest', with rel="next"."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    digests = {push_artifact(client, name, subject, SBOM)[1] for _ in range(5)}
    collected: list[str] = []
    r = referrers(client, name, subject[1], n=2)
    assert r.status_code == 200
    assert len(r.json()["manifests"]) == 2
    pages = 1
    collected += [d["digest"] for d in r.json()["manifests"]]
    while "Link" in r.headers:
        r = client.get(parse_link(r.headers["Link"]))
        assert r.status_code == 200
        assert r.headers["Content-Type"] == OCI_INDEX
        collected += [d["digest"] for d in r.json()["manifests"]]
        pages += 1
        assert pages <= 5
    assert sorted(collected) == sorted(digests)
    assert pages == 3


def test_referrers_pagination_keeps_filter(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    sboms = {push_artifact(client, name, subject, SBOM)[1] for _ in range(3)}
    for _ in range(3):
        push_artifact(client, name, subject, SIGNATURE)
    collected: list[str] = []
    r = referrers(client, name, subject[1], n=2, artifactType=SBOM)
    collected += [d["digest"] for d in listed(r).values()]
    while "Link" in r.headers:
        r = client.get(parse_link(r.headers["Link"]))
        collected += [d["digest"] for d in listed(r).values()]
    assert sorted(collected) == sorted(sboms)


def test_untagging_a_referrer_keeps_it_listed(client: httpx.Client) -> None:
    """Deleting a tag removes only the tag; the referrer manifest still exists."""
    name = repo_name()
    subject = push_image(client, name, "v1")
    _, digest, _ = push_artifact(client, name, subject, SBOM, reference="sbom")
    assert client.delete(f"/v2/{name}/manifests/sbom").status_code == 202
    assert list(listed(referrers(client, name, subject[1]))) == [digest]


def test_repushed_referrer_is_listed_once(client: httpx.Client) -> None:
    name = repo_name()
    subject = push_image(client, name, "v1")
    body, digest, _ = push_artifact(client, name, subject, SBOM)
    push_manifest(client, name, "again", body)
    entries = referrers(client, name, subject[1]).json()["manifests"]
    assert [e["digest"] for e in entries] == [digest]


def test_referrer_of_an_index_subject(client: httpx.Client) -> None:
    name = repo_name()
    child = push_image(client, name)
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, child[0])],
        }
    )
    push_manifest(client, name, "idx", index, OCI_INDEX)
    manifest: dict[str, Any] = json.loads(push_artifact(client, name, None)[0])
    manifest["subject"] = descriptor(OCI_INDEX, index)
    body = canonical(manifest)
    r = push_manifest(client, name, digest_of(body), body)
    assert r.headers["OCI-Subject"] == digest_of(index)
    assert list(listed(referrers(client, name, digest_of(index)))) == [digest_of(body)]

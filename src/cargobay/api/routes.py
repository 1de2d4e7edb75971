"""Every endpoint of the registry, in one table.

`{name}` may contain slashes; aiohttp tries routes in this order, so the more specific
upload routes come before `blobs/{digest}`.
"""

from __future__ import annotations

from aiohttp import web

from cargobay.api import auth, blobs, discovery, health, manifests, uploads

NAME = r"{name:.+}"

ROUTES: list[tuple[str, str, object]] = [
    # method, path, handler                                                   spec endpoint
    ("GET", "/v2/", discovery.api_version),  #                                 end-1
    ("HEAD", "/v2/", discovery.api_version),
    ("GET", "/v2/_catalog", discovery.catalog),
    ("GET", f"/v2/{NAME}/tags/list", discovery.list_tags),  #                  end-8a, end-8b
    ("GET", f"/v2/{NAME}/referrers/{{digest}}", discovery.list_referrers),  #  end-12a, end-12b
    ("GET", f"/v2/{NAME}/manifests/{{reference}}", manifests.get_manifest),  # end-3
    ("HEAD", f"/v2/{NAME}/manifests/{{reference}}", manifests.get_manifest),  # end-3
    ("PUT", f"/v2/{NAME}/manifests/{{reference}}", manifests.put_manifest),  # end-7a, end-7b
    ("DELETE", f"/v2/{NAME}/manifests/{{reference}}", manifests.delete_manifest),  # end-9
    ("POST", f"/v2/{NAME}/blobs/uploads/", uploads.start_upload),  #         end-4a/b/c, end-11
    ("PATCH", f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.patch_upload),  # end-5
    ("PUT", f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.finish_upload),  # end-6
    ("GET", f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.upload_status),  # end-13
    ("DELETE", f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.cancel_upload),  # end-14
    ("GET", f"/v2/{NAME}/blobs/{{digest}}", blobs.get_blob),  #                end-2
    ("HEAD", f"/v2/{NAME}/blobs/{{digest}}", blobs.get_blob),  #               end-2
    ("DELETE", f"/v2/{NAME}/blobs/{{digest}}", blobs.delete_blob),  #          end-10
    # The built-in token server (Docker token authentication), when enabled.
    ("GET", "/auth/token", auth.issue_token),
    ("POST", "/auth/token", auth.issue_token),
    ("GET", "/auth/jwks", auth.jwks),
    # Health checks for load balancers.
    ("GET", "/healthz", health.healthz),
    ("GET", "/readyz", health.readyz),
]


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)  # type: ignore[arg-type]

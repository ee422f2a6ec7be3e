"""First start: an admin project and a credential the operator can use at once.

The token is written, mode 0600, to `STATE_DIR/admin-token`, with a
`STATE_DIR/clouds.yaml` naming a cloud `astara` that uses it, so that
`OS_CLIENT_CONFIG_FILE=STATE_DIR/clouds.yaml openstack --os-cloud astara
network list` works right away. Only the token's digest is stored."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select

from astara.api.auth import digest, new_token
from astara.db.engine import session_factory
from astara.db.models import Credential, Project
from astara.linux.files import write_atomic

ADMIN_PROJECT = "admin"


def clouds_yaml(endpoint: str, token: str) -> str:
    return (
        "# written by astara serve: the admin credential for this Astara\n"
        "clouds:\n"
        "  astara:\n"
        "    auth_type: admin_token\n"
        "    auth:\n"
        f"      endpoint: {endpoint}\n"
        f"      token: {token}\n"
    )


def ensure_admin(engine: Engine, state_dir: Path, endpoint: str, now: datetime) -> str:
    """The admin token in force: the one on disk if the database knows it,
    else a new one (written to disk). The admin project is made if missing."""
    token_file = state_dir / "admin-token"
    sessions = session_factory(engine)
    with sessions.begin() as session:
        admin = session.scalar(select(Project).where(Project.name == ADMIN_PROJECT))
        if admin is None:
            admin = Project(id=uuid.uuid4().hex, name=ADMIN_PROJECT, is_admin=True, created_at=now)
            session.add(admin)
            session.flush()  # the project row first: credentials refer to it
        token = token_file.read_text().strip() if token_file.exists() else ""
        known = token and session.scalar(
            select(Credential).where(
                Credential.token_sha256 == digest(token), Credential.project_id == admin.id
            )
        )
        if not known:
            token = new_token()
            session.add(
                Credential(
                    id=str(uuid.uuid4()),
                    project_id=admin.id,
                    token_sha256=digest(token),
                    created_at=now,
                )
            )
    write_atomic(token_file, token + "\n", mode=0o600)
    write_atomic(state_dir / "clouds.yaml", clouds_yaml(endpoint, token), mode=0o600)
    return token

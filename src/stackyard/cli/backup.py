"""``stackyard backup`` and ``restore``: the platform's state in one file, and back.

Both run here, on the platform's machine, against its data directory (not through the
API): a backup works while the platform runs or not, and a restore needs no platform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackyard.cli.output import console, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.platform.diskuse import human_bytes as human_size


def backup(
    file: Annotated[Path, typer.Argument(help="The backup file to write (a tar archive).")],
    no_images: Annotated[
        bool, typer.Option("--no-images", help="Leave the registry's images out.")
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Back up the platform, while it runs: state, secrets key, remotes, images."""
    from dataclasses import asdict

    from stackyard.platform.backup import write_backup

    result = write_backup(settings_for(data_dir), file, images=not no_images)
    manifest = result.manifest
    if json_output:
        print_json({"path": str(result.path), "bytes": result.bytes,
                    "seconds": round(result.seconds, 2), "manifest": asdict(manifest)})  # fmt: skip
        return
    images = (
        f"{manifest.registry_files} registry files ({human_size(manifest.registry_bytes)})"
        if manifest.images
        else "no images (--no-images)"
    )
    console.print(
        f"backed up {len(manifest.stacks)} stack(s), {manifest.releases} release(s), "
        f"{manifest.secrets} secret(s), {len(manifest.remotes)} git remote(s), {images}, "
        f"{manifest.log_files} log file(s)"
    )
    console.print(
        f"  {result.path} ({human_size(result.bytes)}, {result.seconds:.1f} s, mode 0600)"
    )
    console.print("  it holds the secrets key and the tokens' keys: keep it as safe as those")


def restore(
    file: Annotated[Path, typer.Argument(help="A file `stackyard backup` wrote.")],
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Restore a backup into a fresh data directory; `stackyard up` then starts every stage."""
    from dataclasses import asdict

    from stackyard.platform.restore import restore_backup

    result = restore_backup(file, settings_for(data_dir))
    manifest = result.manifest
    if json_output:
        print_json({"data_dir": str(result.data_dir), "seconds": round(result.seconds, 2),
                    "manifest": asdict(manifest)})  # fmt: skip
        return
    console.print(
        f"restored {len(manifest.stacks)} stack(s), {manifest.releases} release(s) and "
        f"{manifest.secrets} secret(s) into {result.data_dir} ({result.seconds:.1f} s), "
        f"from a backup Stackyard {manifest.stackyard_version} took at {manifest.created_at}"
    )
    if not manifest.images:
        console.print(
            "[yellow]the backup holds no images (--no-images):[/] a stage starts only once its "
            "image is back; build each stack again (`stackyard build STACK`) and deploy it"
        )
    console.print(f"start it with: stackyard up -d --data-dir {result.data_dir}")


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)

"""Which uid and gid a task's files get: the image's USER, looked up as Docker does."""

from __future__ import annotations

import pytest

from stackyard.engines.docker import resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1001:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n"


@pytest.mark.parametrize(
    ("user", "group", "expected"),
    [
        ("app", "", (1000, 1001)),  # a name: its uid and its primary group
        ("1000", "", (1000, 1001)),  # a uid in passwd: its primary group too
        ("4242", "", (4242, 0)),  # a uid unknown to the image: group 0, as Docker runs it
        ("app", "staff", (1000, 50)),
        ("app", "7", (1000, 7)),
        ("nobody", "", (65534, 65534)),
    ],
)
def test_user_and_group_resolve_like_a_dockerfile_user(
    user: str, group: str, expected: tuple[int, int]
) -> None:
    assert resolve_user(user, group, PASSWD, GROUP) == expected


def test_a_name_the_image_lacks_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        resolve_user("ghost", "", PASSWD, GROUP)
    with pytest.raises(KeyError):
        resolve_user("app", "ghosts", PASSWD, GROUP)

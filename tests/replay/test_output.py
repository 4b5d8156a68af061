"""Text tables of the replay reports: alignment and the cap on column widths."""

from __future__ import annotations

from flatnet.replay.output import MAX_CELL_WIDTH, clip, display_width, table


def test_long_cell_is_cut_with_ellipsis():
    lines = table(["NAME", "COUNT"], [["x" * 300, 1], ["web", 2]], right=(1,))

    assert len(lines[1]) == MAX_CELL_WIDTH + len("  ") + len("COUNT")
    assert lines[1].startswith("x" * (MAX_CELL_WIDTH - 1) + "…  ")
    assert lines[2] == "web" + " " * (MAX_CELL_WIDTH - 3) + "      2"


def test_dns_label_length_is_not_cut():
    name = "n" * 63

    assert table(["NAME", "COUNT"], [[name, 1]])[1] == name + "  1"


def test_last_column_is_not_cut():
    detail = "d" * 300

    assert table(["TIME", "DETAIL"], [["t", detail]])[1] == "t     " + detail


def test_clip_counts_wide_characters_as_two_columns():
    clipped = clip("名前" * 40, 9)

    assert clipped == "名前名前…"
    assert display_width(clipped) == 9

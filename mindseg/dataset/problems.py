"""Bad-input reports of the COCO reader and the MindRecord converter: a :class:`Problem` names
the image id, the file and the reason; :func:`report_problems` prints each and the counted
summary (:func:`problem_summary`) that convert_coco.py, train.py and eval.py print alike.
"""
import collections

Problem = collections.namedtuple("Problem", ["image_id", "file_name", "reason"])
Problem.__str__ = lambda p: f"image {p.image_id} ({p.file_name}): {p.reason}"

# Short kinds for the summary count, in the order they are reported.
PROBLEM_KINDS = ("missing image file", "unreadable image", "image size mismatch",
                 "bad image entry", "unknown image id", "unknown category id", "bad box",
                 "box outside image", "clipped box", "bad polygon", "bad rle", "no segmentation",
                 "duplicate annotation id")
KEPT_KINDS = ("clipped box", "duplicate annotation id")  # reported, but the item is kept


def problem_kind(problem):
    """The summary kind of a :class:`Problem` (the reason text starts with it)."""
    for kind in PROBLEM_KINDS:
        if problem.reason.startswith(kind):
            return kind
    return "other"


def summarize_problems(problems):
    """``"3 problems skipped: 2 bad box, 1 missing image file"`` (or ``"no problems"``)."""
    if not problems:
        return "no problems"
    counts = collections.Counter(problem_kind(p) for p in problems)
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    return f"{len(problems)} problems skipped: {parts}"


def problem_counts(problems):
    """``{kind: count}`` in the order the kinds first occur."""
    counts = {}
    for problem in problems:
        kind = problem_kind(problem)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def count_skipped_images(load_problems):
    """Images the annotation loader skipped whole (missing file, bad entry)."""
    return sum(problem_kind(p) in ("missing image file", "bad image entry") for p in load_problems)


def problem_summary(skipped_images, num_problems, counts):
    """The counted line: ``skipped: 1 images, 3 problems (2 bad box, 1 missing image file)``."""
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return (f"skipped: {skipped_images} images, {num_problems} problems"
            f"{' (' + parts + ')' if parts else ''}")


def problem_line(problem):
    """``skipped: image 3 (a.jpg): bad box: ...`` (``kept:`` for a clipped box)."""
    return f"{'kept' if problem_kind(problem) in KEPT_KINDS else 'skipped'}: {problem}"


def report_problems(problems, log):
    """Name every problem, then :func:`problem_summary`, through ``log`` (one line each)."""
    for problem in problems:
        log(problem_line(problem))
    log(problem_summary(count_skipped_images(problems), len(problems), problem_counts(problems)))

"""Bad-input reports of the COCO reader and the MindRecord converter: a :class:`Problem` names
the image id, the file and the reason; :func:`report_problems` names the first few of each kind
(:class:`ProblemLog`), counts the rest, and prints the counted summary (:func:`problem_summary`)
that convert_coco.py, train.py and eval.py print alike, with the file that lists them all
(:func:`write_problem_list`): a dataset with 10,000 missing images gives a dozen lines, not
10,001.
"""
import collections
import os

Problem = collections.namedtuple("Problem", ["image_id", "file_name", "reason"])
Problem.__str__ = lambda p: f"image {p.image_id} ({p.file_name}): {p.reason}"

# Short kinds for the summary count, in the order they are reported.
PROBLEM_KINDS = ("missing image file", "unreadable image", "image size mismatch",
                 "bad image entry", "unknown image id", "unknown category id", "bad box",
                 "box outside image", "clipped box", "bad polygon", "bad rle", "no segmentation",
                 "duplicate annotation id")
KEPT_KINDS = ("clipped box", "duplicate annotation id")  # reported, but the item is kept
NAMED_PER_KIND = 5  # problems of one kind named on the console; the list file holds them all


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


class ProblemLog:
    """Call it with each :class:`Problem`: the first ``per_kind`` of each kind are named through
    ``log`` (one line each, :func:`problem_line`); :meth:`close` counts the rest of each kind.
    ``log`` may be replaced on the way (a progress bar's writer)."""

    def __init__(self, log, per_kind=NAMED_PER_KIND):
        self.log, self.per_kind = log, per_kind
        self.counts = collections.Counter()

    def __call__(self, problem):
        kind = problem_kind(problem)
        self.counts[kind] += 1
        if self.counts[kind] <= self.per_kind:
            self.log(problem_line(problem))

    def close(self):
        for kind, count in self.counts.items():
            if count > self.per_kind:
                self.log(f"... and {count - self.per_kind:,} more '{kind}' problems")


def write_problem_list(problems, path):
    """Write every problem (one :func:`problem_line` each) to ``path``; returns the phrase for the
    summary line: ``"all listed in PATH"``, or why it could not be written (a side output: the
    caller goes on)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(problem_line(p) + "\n" for p in problems)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        return f"the full list could not be written to {path}: {err.strerror or err}"
    return f"all listed in {path}"


def report_problems(problems, log, list_file=None):
    """Name the first few problems of each kind and count the rest (:class:`ProblemLog`), then
    :func:`problem_summary`, through ``log`` (one line each). With ``list_file`` (and problems)
    every problem is written there too, and the summary says where."""
    named = ProblemLog(log)
    for problem in problems:
        named(problem)
    named.close()
    summary = problem_summary(count_skipped_images(problems), len(problems),
                              problem_counts(problems))
    if problems and list_file:
        summary += f"; {write_problem_list(problems, list_file)}"
    log(summary)

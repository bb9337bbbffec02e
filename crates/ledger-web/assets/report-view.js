// Shows a verification report (verify.mjs `verifyPackage` / `verifyReceiptResponse`) in a page:
// a verdict line and one list item per check with its mark, title and reason. Shared by the
// verifier and the explorer, so a check reads the same on both.

const MARKS = { pass: ["\u2713", "Passed"], fail: ["\u2717", "Failed"], skip: ["\u2013", "Not checked"] };

/** Sets `verdict`'s state and text: idle, running, verified, failed or error. */
export function showVerdict(verdict, state, text) {
  verdict.dataset.state = state;
  verdict.textContent = text;
}

/** Renders `result.checks` into the list `list` and the outcome into `verdict`. */
export function showReport(verdict, list, result) {
  list.replaceChildren(
    ...result.checks.map((check) => {
      const item = document.createElement("li");
      item.dataset.check = check.id;
      item.dataset.status = check.status;
      const [symbol, word] = MARKS[check.status];
      const mark = document.createElement("span");
      mark.className = "check-mark";
      mark.setAttribute("aria-label", word);
      mark.textContent = symbol;
      const title = document.createElement("span");
      title.className = "check-title";
      title.textContent = check.title;
      const detail = document.createElement("span");
      detail.className = "check-detail";
      detail.textContent = check.detail;
      item.append(mark, title, detail);
      return item;
    }),
  );
  const failed = result.checks.find((c) => c.status === "fail");
  if (failed) showVerdict(verdict, "failed", `\u2717 Not verified \u2014 this check failed: ${failed.title} (${failed.kind}).`);
  else showVerdict(verdict, "verified", "\u2713 Verified: every check that could run passed.");
}

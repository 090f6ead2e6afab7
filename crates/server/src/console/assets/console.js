// Router One console: the only script. Copy buttons and confirmations; every page works without it.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined ? source.value : source.textContent;
  const status = document.getElementById(button.dataset.copy + "-status");
  try {
    await navigator.clipboard.writeText(text.trim());
    if (status) status.textContent = "Copied.";
  } catch (e) {
    // No clipboard (an insecure origin, or permission refused): select the text instead.
    if (source.select) source.select();
    if (status) status.textContent = "Press Ctrl+C (⌘C) to copy.";
  }
});
document.querySelectorAll("[data-copy]").forEach((b) => { b.hidden = false; });

// Small behaviours shared by every console page. Everything works without it; it only adds
// copy buttons, confirmations, snippet tabs, and an early warning about oversized uploads.
// (The console's CSP forbids inline handlers, so they are attached here.)

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP origins other than localhost have no async clipboard: the old way still works.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "trap";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  try {
    await copyText(source.textContent.trim());
    button.textContent = "Copied ✓";
  } catch {
    button.textContent = "Press Ctrl+C";
    getSelection().selectAllChildren(source);
  }
  setTimeout(() => (button.textContent = label), 1600);
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !confirm(form.dataset.confirm)) event.preventDefault();
});

function bytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} bytes`;
}

for (const input of document.querySelectorAll("input[type=file][data-max]")) {
  input.addEventListener("change", () => {
    const file = input.files[0];
    const note = input.parentElement.querySelector(".filename");
    const limit = Number(input.dataset.max);
    input.setCustomValidity("");
    if (!file) {
      if (note) note.textContent = "";
      return;
    }
    if (file.size > limit) {
      input.setCustomValidity(`${file.name} is ${bytes(file.size)}; the limit is ${bytes(limit)}.`);
      input.reportValidity();
    }
    if (note) note.textContent = `${file.name} · ${bytes(file.size)}${file.size > limit ? " — too large" : ""}`;
  });
}

// "Start from the example" on the new-campaign form: the example's sources (in <template>s) fill the
// textareas, and any file chosen is cleared, since a chosen file wins over pasted text.
const exampleButton = document.getElementById("start-example");
if (exampleButton) {
  exampleButton.closest("[hidden]")?.removeAttribute("hidden");
  exampleButton.addEventListener("click", () => {
    for (const template of document.querySelectorAll("template[id^='example-']")) {
      const name = template.id.slice("example-".length);
      const area = document.getElementById(`${name}_text`);
      const file = document.getElementById(`${name}_file`);
      if (!area) continue;
      area.value = template.content.textContent;
      if (file) {
        file.value = "";
        const note = file.parentElement.querySelector(".filename");
        if (note) note.textContent = "";
      }
    }
  });
}

for (const list of document.querySelectorAll("[role=tablist]")) {
  const tabs = [...list.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      }
    });
  }
}

// Times are rendered in UTC by the server; show them in the reader's own time zone.
for (const time of document.querySelectorAll("time[datetime]")) {
  const when = new Date(time.getAttribute("datetime"));
  if (!Number.isNaN(when.getTime())) {
    time.title = time.textContent;
    time.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }
}

// A box that scrolls (a code box, a wide table) must be reachable with the keyboard, and named for
// screen readers: it gets tabindex=0, the region role and a label from the heading before it. Boxes
// whose content changes later (the live view) are checked again whenever the window is resized.
function nameOf(box) {
  for (let node = box.previousElementSibling; node; node = node.previousElementSibling) {
    if (/^H[1-6]$/.test(node.tagName)) return node.textContent.trim();
  }
  return box.tagName === "PRE" ? "Code" : "Table";
}

function makeScrollableBoxesFocusable() {
  for (const box of document.querySelectorAll("pre, .table-wrap")) {
    const scrolls = box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1;
    if (!scrolls || box.hasAttribute("tabindex")) continue;
    box.tabIndex = 0;
    if (!box.hasAttribute("role")) box.setAttribute("role", "region");
    if (!box.hasAttribute("aria-label") && !box.hasAttribute("aria-labelledby")) {
      box.setAttribute("aria-label", `${nameOf(box)} (scrolls)`);
    }
  }
}

makeScrollableBoxesFocusable();
window.addEventListener("resize", makeScrollableBoxesFocusable);

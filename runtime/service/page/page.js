// The page of `zsris-rt serve`: pick an image, type expressions, POST /segment, draw the masks.
// Plain browser JavaScript, no dependencies; everything it loads comes from the server itself.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("form"), fileInput = $("image"), drop = $("drop"), texts = $("texts");
  const tokenBox = $("token-box"), tokenInput = $("token"), button = $("segment");
  const candidatesBox = $("candidates"), statusLine = $("status"), errorBox = $("error");
  const result = $("result"), canvas = $("view"), legend = $("legend"), summary = $("summary");
  const TOKEN_KEY = "zsris-rt-token";
  const ALPHA = Number(canvas.dataset.alpha);  // the chosen masks' tint
  const CANDIDATE_ALPHA = 0.3;
  const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                   "#f032e6", "#9a6324", "#469990", "#000075"];
  const CANDIDATE_COLOURS = ["#ffe119", "#00bcd4", "#ff9800", "#8bc34a", "#e91e63", "#9c27b0",
                             "#3f51b5", "#009688", "#cddc39", "#795548", "#607d8b", "#ff5722"];

  let file = null;        // the image chosen
  let picture = null;     // it, decoded by the browser (an <img>)
  let pictureReady = Promise.resolve();  // settles once `picture` is decoded (or failed)
  let shown = null;       // {response, file, texts}: what the canvas shows
  let busy = false;

  // ------------------------------------------------------------------ COCO compressed RLE

  // The counts string → the runs: each value is 5-bit groups, low first, one character each
  // (48 + bits; 0x20: more groups follow; 0x10 of the last group: negative). From the fourth
  // run on, a value is the difference to the run two before.
  function decodeCounts(counts) {
    const runs = [];
    let p = 0;
    while (p < counts.length) {
      let x = 0, shift = 1, more = true;
      while (more) {
        if (p >= counts.length) throw new Error("RLE: the counts string ends inside a value");
        const c = counts.charCodeAt(p++) - 48;
        if (c < 0 || c > 63) throw new Error("RLE: a character outside '0'..'o'");
        x += (c & 0x1f) * shift;
        shift *= 32;
        more = (c & 0x20) !== 0;
        if (!more && (c & 0x10)) x -= shift;
      }
      if (runs.length > 2) x += runs[runs.length - 2];
      runs.push(x);
    }
    return runs;
  }

  // {"size": [h, w], "counts": str} → Uint8Array of h·w, row-major (1 inside the mask).
  function decodeRle(rle) {
    const [h, w] = rle.size;
    const runs = decodeCounts(rle.counts);
    const mask = new Uint8Array(h * w);
    let i = 0;  // position down the columns (column-major), runs alternate 0s and 1s from 0s
    for (let r = 0; r < runs.length; r++) {
      const end = i + runs[r];
      if (runs[r] < 0 || end > h * w) throw new Error("RLE: the runs overflow the image");
      if (r % 2 === 1) {
        for (let j = i; j < end; j++) mask[(j % h) * w + Math.floor(j / h)] = 1;
      }
      i = end;
    }
    if (i !== h * w) throw new Error("RLE: the runs do not cover the image");
    return mask;
  }

  // ------------------------------------------------------------------ drawing

  function rgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [n >> 16, (n >> 8) & 255, n & 255];
  }

  function tint(data, mask, colour, alpha) {
    const [r, g, b] = rgb(colour);
    for (let p = 0, q = 0; p < mask.length; p++, q += 4) {
      if (!mask[p]) continue;
      data[q] = Math.round(data[q] * (1 - alpha) + r * alpha);
      data[q + 1] = Math.round(data[q + 1] * (1 - alpha) + g * alpha);
      data[q + 2] = Math.round(data[q + 2] * (1 - alpha) + b * alpha);
    }
  }

  function drawBase(h, w) {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, w, h);
    if (picture) ctx.drawImage(picture, 0, 0, w, h);
    return ctx;
  }

  // The image, the candidates (faint, when asked for), each expression's mask, box and number.
  function draw() {
    if (!shown) return;
    const response = shown.response;
    const [h, w] = response.image_size;
    const ctx = drawBase(h, w);
    const image = ctx.getImageData(0, 0, w, h);
    const candidates = candidatesBox.checked ? response.candidates || [] : [];
    // The largest first, so that a small mask stays visible over a large one.
    [...candidates].sort((a, b) => b.area - a.area).forEach((c) => tint(
      image.data, decodeRle(c.rle), CANDIDATE_COLOURS[c.index % CANDIDATE_COLOURS.length],
      CANDIDATE_ALPHA));
    response.results.forEach((r, k) => tint(image.data, decodeRle(r.rle),
                                            COLOURS[k % COLOURS.length], ALPHA));
    ctx.putImageData(image, 0, 0);
    // Boxes are [x0, y0, x1, y1): their outline and number stay inside them.
    ctx.lineWidth = 2;
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.textBaseline = "top";
    response.results.forEach((r, k) => {
      const [x0, y0, x1, y1] = r.box;
      const colour = COLOURS[k % COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.strokeRect(x0 + 1, y0 + 1, Math.max(x1 - x0 - 2, 0), Math.max(y1 - y0 - 2, 0));
      const tag = String(k + 1);
      const tw = Math.min(ctx.measureText(tag).width + 6, Math.max(x1 - x0, 0));
      ctx.fillStyle = colour;
      ctx.fillRect(x0, y0, tw, Math.min(16, Math.max(y1 - y0, 0)));
      ctx.fillStyle = "#fff";
      ctx.fillText(tag, x0 + 3, y0 + 2, Math.max(tw - 4, 1));
    });
    drawLegend(response, candidates.length);
  }

  function drawLegend(response, candidates) {
    legend.replaceChildren();
    response.results.forEach((r, k) => {
      const li = document.createElement("li");
      li.className = "entry";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[k % COLOURS.length];
      swatch.dataset.colour = COLOURS[k % COLOURS.length];
      swatch.setAttribute("aria-hidden", "true");
      const phrase = document.createElement("span");
      phrase.className = "phrase";
      phrase.textContent = r.noun_phrase;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = r.score.toFixed(3);
      const box = document.createElement("span");
      box.className = "box";
      box.textContent = `[${r.box.join(", ")})`;
      li.append(swatch, phrase, ` — “${r.text}”: score `, score, `, mask ${r.index + 1} of ` +
                `${response.num_masks}, box `, box, `, ${r.area} px`);
      legend.append(li);
    });
    summary.textContent = `${response.num_masks} candidate mask(s)` +
      (candidates ? `, all shown in faint colours.` : ".") +
      ` Timings: ${Object.entries(response.results[0].timings_ms || {})
        .map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(", ")}.`;
  }

  // ------------------------------------------------------------------ messages

  function setBusy(on, message) {
    busy = on;
    button.disabled = on;
    result.setAttribute("aria-busy", String(on));
    statusLine.classList.toggle("busy", on);
    statusLine.textContent = message || "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  // ------------------------------------------------------------------ the image

  function useFile(chosen) {
    if (!chosen) return;
    file = chosen;
    shown = null;
    showError("");
    statusLine.textContent = `Image: ${chosen.name}`;
    const url = URL.createObjectURL(chosen);
    const img = new Image();
    picture = null;
    pictureReady = new Promise((resolve) => {
      img.onload = () => {
        if (chosen === file) {
          picture = img;
          result.hidden = false;
          legend.replaceChildren();
          summary.textContent = "";
          drawBase(img.naturalHeight, img.naturalWidth);
        }
        URL.revokeObjectURL(url);
        resolve();
      };
      img.onerror = () => {
        showError(`The browser cannot show ${chosen.name}; the server may still read it.`);
        URL.revokeObjectURL(url);
        resolve();
      };
    });
    img.src = url;
  }

  fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => {
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const dropped = event.dataTransfer && event.dataTransfer.files[0];
    if (!dropped) return;
    try {  // keep the file input in step, where the browser allows it
      const list = new DataTransfer();
      list.items.add(dropped);
      fileInput.files = list.files;
    } catch (e) { /* older browsers: the dropped file is used all the same */ }
    useFile(dropped);
  });
  // A page-wide drop outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // ------------------------------------------------------------------ the token

  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  if (tokenInput.value) tokenBox.open = true;
  tokenInput.addEventListener("input", () => {
    const token = tokenInput.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  });

  // ------------------------------------------------------------------ the request

  function expressions() {
    return texts.value.split("\n").map((t) => t.trim()).filter((t) => t);
  }

  async function segment(lines, withCandidates) {
    if (busy) return;
    if (!file) {
      showError("Choose an image first.");
      fileInput.focus();
      return;
    }
    if (!lines.length) {
      showError("Type at least one expression, one per line.");
      texts.focus();
      return;
    }
    const body = new FormData();
    body.append("image", file, file.name);
    lines.forEach((t) => body.append("text", t));
    if (withCandidates) body.append("candidates", "true");
    const headers = {};
    const token = tokenInput.value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    showError("");
    setBusy(true, `Segmenting ${lines.length} expression(s)…`);
    const chosen = file;
    try {
      let response;
      try {
        response = await fetch("/segment", {method: "POST", body, headers});
      } catch (e) {
        throw new Error(`The server did not answer (${e.message}). Is zsris-rt serve running?`);
      }
      let data = null;
      try {
        data = await response.json();
      } catch (e) { /* not JSON: reported below by its status */ }
      if (response.status === 401) {
        tokenBox.open = true;
        tokenInput.focus();
        throw new Error("This server needs a token: enter it under “Access token” and " +
                        "segment again." + (data && data.error ? ` (${data.error})` : ""));
      }
      if (!response.ok) {
        const why = data && data.error ? data.error : response.statusText;
        const retry = response.headers.get("Retry-After");
        throw new Error(`Error ${response.status}: ${why}` +
                        (retry ? ` (retry in ${retry} s)` : ""));
      }
      await pictureReady;
      if (chosen !== file) return;  // another image was chosen meanwhile
      shown = {response: data, file: chosen, texts: lines};
      result.hidden = false;
      draw();
      setBusy(false, `Done: ${data.results.length} expression(s), ${data.num_masks} ` +
                     "candidate mask(s).");
    } catch (e) {
      setBusy(false, "");
      showError(e.message);
    } finally {
      if (busy) setBusy(false, statusLine.textContent);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    segment(expressions(), candidatesBox.checked);
  });
  texts.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  candidatesBox.addEventListener("change", () => {
    if (!shown) return;
    if (candidatesBox.checked && !shown.response.candidates) {
      segment(shown.texts, true);  // the same image and expressions, with every mask
    } else {
      draw();
    }
  });
})();

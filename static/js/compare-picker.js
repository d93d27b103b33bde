// Tick two to four rows of a board, then "Compare selected" opens them side by side.
(function () {
  "use strict";
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const ids = document.getElementById("compare-ids");
  function update() {
    const picked = Array.from(form.querySelectorAll("input.pick:checked")).map((el) => el.value);
    ids.value = picked.join(",");
    button.disabled = picked.length < 2 || picked.length > 4;
    button.textContent = picked.length > 4 ? "Pick at most four" : "Compare selected (" + picked.length + ")";
  }
  form.addEventListener("change", update);
  form.querySelectorAll("input.pick").forEach((el) => el.removeAttribute("name"));
  update();
})();

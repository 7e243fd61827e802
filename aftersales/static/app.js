// Picking a canned reply fills the text box so the agent can edit it before sending.
// Without JavaScript the server fills in the chosen reply when the box is left empty.
document.addEventListener("change", function (event) {
  var select = event.target;
  if (!select.classList || !select.classList.contains("macro-select")) return;
  var option = select.options[select.selectedIndex];
  var box = select.form.querySelector("textarea[name=note]");
  if (box && option && option.dataset.body) box.value = option.dataset.body;
});

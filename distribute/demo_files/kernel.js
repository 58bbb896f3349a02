// The seed's example kernel: finds the numbers in [min, max) divisible by the static divisor.
(function () {
  var divisor;

  function loadStaticDataset(text) {
    divisor = JSON.parse(text).divisor;
  }

  function main(dataset) {
    var results = [];
    for (var i = dataset.min; i < dataset.max; ++i) {
      if (i % divisor === 0) results.push(i);
    }
    return results.length > 0 ? results : null; // null: no result for this dataset
  }

  return { main: main, loadStaticDataset: loadStaticDataset };
})()

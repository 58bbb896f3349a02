// The seed's example generator: 100 ranges covering [0, 10000).
(function () {
  function main() {
    var datasets = [];
    for (var i = 0; i < 10000; i += 100) {
      datasets.push({ min: i, max: i + 100 });
    }
    return datasets;
  }
  return { main: main };
})()

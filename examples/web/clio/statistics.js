// Stands in for Clio's statistics tag: it runs only once the visitor
// allowed cookies.statistical (tagged with data-lethe-purpose).
document.getElementById('statistics').textContent = 'statistics loaded';
window.statisticsRuns = (window.statisticsRuns || 0) + 1;

"""Static files of the HTML listening report (tfaural.report): style.css, report.js."""

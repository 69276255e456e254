"""The page's CSS: status lines that read as notes, diagrams and tables that fit a phone, API text that wraps."""

CSS = """
.zoo-status:not(:empty) p { margin: 0; color: var(--body-text-color); }
.zoo-status p:has(+ *), .zoo-status p { font-weight: 500; }
#api-doc pre, #api-doc code { white-space: pre-wrap; overflow-wrap: anywhere; }
#api-doc pre { max-width: 100%; max-height: 26em; overflow-y: auto; }  /* compact: the code scrolls */
#stage-table th span, #compare-table th span { word-break: normal !important; overflow-wrap: normal !important; }
#arch-diagram { overflow-x: auto; }
#compare-status { min-height: 2em; }
@media (max-width: 640px) {
  #intro p, #banner { font-size: 0.85em; line-height: 1.35; }
  #classify-model .info-text, #compare-models .info-text { display: none; }
  #classify-image, #compare-image { height: 170px !important; }  /* the examples stay in the first view */
  #intro h1 { font-size: 1.4em; margin: 0.2em 0; }
}
"""

"""The page's CSS: status lines that read as notes, diagrams and tables that fit a phone, API text that wraps."""

CSS = """
.zoo-status:not(:empty) p { margin: 0; color: var(--body-text-color); }
.zoo-status p:has(+ *), .zoo-status p { font-weight: 500; }
#api-doc pre, #api-doc code { white-space: pre-wrap; overflow-wrap: anywhere; }
#api-doc pre { max-width: 100%; }
#stage-table th, #compare-table th { word-break: normal; overflow-wrap: normal; hyphens: none; }
#arch-diagram { overflow-x: auto; }
@media (max-width: 640px) {
  #intro p, #banner { font-size: 0.85em; line-height: 1.35; }
  #classify-model .info, #compare-models .info { display: none; }
  #intro h1 { font-size: 1.4em; margin: 0.2em 0; }
}
"""

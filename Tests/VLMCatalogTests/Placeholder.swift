import Testing
@testable import VLMCatalog

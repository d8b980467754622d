import Testing
@testable import VLMText

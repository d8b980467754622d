import Testing
@testable import VLMLoader

import Testing
@testable import VLMPipeline

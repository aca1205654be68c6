"""An LTI 1.3 platform (an LMS stand-in built on lti1p3platform) for the LTI tool's tests."""

"""CWL through cwltool: kran replaces only how a CommandLineTool's command is launched."""

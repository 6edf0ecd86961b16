"""One module per page group, each an APIRouter of the dashboard."""

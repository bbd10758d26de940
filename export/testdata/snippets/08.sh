cd moe_expert_tracking/

# Find most common expert pairs
head -20 moe_expert_coselection.csv

# Analyze routing weight distribution
python -c "
import pandas as pd
import numpy as np
df = pd.read_csv('moe_routing_weights_hist.csv')
print('Routing weight statistics:')
print(f'  Mean: {df[\"weight\"].mean():.4f}')
print(f'  Std: {df[\"weight\"].std():.4f}')
print(f'  Min: {df[\"weight\"].min():.4f}')
print(f'  Max: {df[\"weight\"].max():.4f}')
"
